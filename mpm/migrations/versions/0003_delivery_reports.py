"""delivery reports: parked reports (Sms.report_due_at comes with 0002)

Revision ID: 0003
Revises: 0002
"""
from alembic import op
import sqlalchemy as sa

revision = '0003'
down_revision = '0002'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('parked_report',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('gateway', sa.String(length=32), nullable=False),
    sa.Column('provider_message_id', sa.String(length=120), nullable=False),
    sa.Column('status', sa.String(length=12), nullable=False),
    sa.Column('detail', sa.Text(), nullable=False),
    sa.Column('raw_status', sa.String(length=40), nullable=False),
    sa.Column('number', sa.String(length=20), nullable=False),
    sa.Column('received_at', sa.DateTime(timezone=True), nullable=False),
    sa.Column('company_id', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['company_id'], ['company.id'], name=op.f('fk_parked_report_company_id_company')),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_parked_report'))
    )
    with op.batch_alter_table('parked_report', schema=None) as batch_op:
        batch_op.create_index(batch_op.f('ix_parked_report_company_id'), ['company_id'], unique=False)
        batch_op.create_index('ix_parked_report_lookup', ['company_id', 'gateway', 'provider_message_id'], unique=False)
        batch_op.create_index(batch_op.f('ix_parked_report_received_at'), ['received_at'], unique=False)


def downgrade():
    with op.batch_alter_table('parked_report', schema=None) as batch_op:
        batch_op.drop_index(batch_op.f('ix_parked_report_received_at'))
        batch_op.drop_index('ix_parked_report_lookup')
        batch_op.drop_index(batch_op.f('ix_parked_report_company_id'))
    op.drop_table('parked_report')
