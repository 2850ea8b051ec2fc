"""send engine: why a queued message waits, how long an unconfirmed one waits for its report,
each gateway's circuit breaker, and the index a send job reads its queue with

Revision ID: 0002
Revises: 0001
"""
import sqlalchemy as sa
from alembic import op

revision = '0002'
down_revision = '0001'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('sms', schema=None) as batch_op:
        batch_op.add_column(sa.Column('waiting_reason', sa.String(length=160), nullable=True))
        batch_op.add_column(sa.Column('report_due_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.create_index('ix_sms_lane_queue', ['company_id', 'lane', 'status', 'id'], unique=False)
    with op.batch_alter_table('gateway_setting', schema=None) as batch_op:
        batch_op.add_column(sa.Column('circuit_state', sa.String(length=8), server_default='closed', nullable=False))
        batch_op.add_column(sa.Column('circuit_since', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('last_error', sa.Text(), nullable=True))
        batch_op.add_column(sa.Column('last_error_at', sa.DateTime(timezone=True), nullable=True))
        batch_op.add_column(sa.Column('last_success_at', sa.DateTime(timezone=True), nullable=True))


def downgrade():
    with op.batch_alter_table('gateway_setting', schema=None) as batch_op:
        batch_op.drop_column('last_success_at')
        batch_op.drop_column('last_error_at')
        batch_op.drop_column('last_error')
        batch_op.drop_column('circuit_since')
        batch_op.drop_column('circuit_state')
    with op.batch_alter_table('sms', schema=None) as batch_op:
        batch_op.drop_index('ix_sms_lane_queue')
        batch_op.drop_column('report_due_at')
        batch_op.drop_column('waiting_reason')
