"""phone_number.valid: phonenumbers' verdict stored with each number

Revision ID: 0006
Revises: 0005
"""
from alembic import op
import sqlalchemy as sa

revision = '0006'
down_revision = '0005'
branch_labels = None
depends_on = None

BATCH = 5000


def upgrade():
    with op.batch_alter_table('phone_number', schema=None) as batch_op:
        batch_op.add_column(sa.Column('valid', sa.Boolean(), server_default=sa.true(), nullable=False))
    # Numbers stored before the flag existed: judge each once with the same rule as new ones.
    from mpm.people.phones import is_valid_e164

    connection = op.get_bind()
    table = sa.table('phone_number', sa.column('id', sa.Integer()), sa.column('e164', sa.String()),
                     sa.column('valid', sa.Boolean()))
    last_id = 0
    while True:
        rows = connection.execute(sa.select(table.c.id, table.c.e164).where(table.c.id > last_id)
                                  .order_by(table.c.id).limit(BATCH)).all()
        if not rows:
            break
        invalid = [row.id for row in rows if not is_valid_e164(row.e164)]
        if invalid:
            connection.execute(sa.update(table).where(table.c.id.in_(invalid)).values(valid=False))
        last_id = rows[-1].id


def downgrade():
    with op.batch_alter_table('phone_number', schema=None) as batch_op:
        batch_op.drop_column('valid')
