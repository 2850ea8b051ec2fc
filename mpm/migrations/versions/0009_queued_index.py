"""the send queue's index holds queued messages only (ix_sms_queued replaces ix_sms_lane_queue): a
claim updates it once, a send's outcome not at all

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-27 14:50:00

"""
import sqlalchemy as sa
from alembic import op


revision = '0009'
down_revision = '0008'
branch_labels = None
depends_on = None

QUEUED_ONLY = "status = 'queued'"


def upgrade():
    with op.batch_alter_table('sms', schema=None) as batch_op:
        batch_op.drop_index('ix_sms_lane_queue')
        batch_op.create_index('ix_sms_queued', ['company_id', 'lane', 'id'], unique=False,
                              sqlite_where=sa.text(QUEUED_ONLY), postgresql_where=sa.text(QUEUED_ONLY))


def downgrade():
    with op.batch_alter_table('sms', schema=None) as batch_op:
        batch_op.drop_index('ix_sms_queued', sqlite_where=sa.text(QUEUED_ONLY), postgresql_where=sa.text(QUEUED_ONLY))
        batch_op.create_index('ix_sms_lane_queue', ['company_id', 'lane', 'status', 'id'], unique=False)
