"""the report writer's last committed batch (applied_reports): a batch committed but not yet
removed from Redis when its writer died is not applied a second time

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-28 00:20:00

"""
import sqlalchemy as sa
from alembic import op


revision = '0010'
down_revision = '0009'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('applied_reports',
    sa.Column('stream', sa.String(length=64), nullable=False),
    sa.Column('epoch', sa.String(length=32), nullable=True),
    sa.Column('first_id', sa.String(length=40), nullable=True),
    sa.Column('last_id', sa.String(length=40), nullable=True),
    sa.PrimaryKeyConstraint('stream', name=op.f('pk_applied_reports'))
    )


def downgrade():
    op.drop_table('applied_reports')
