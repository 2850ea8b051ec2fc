"""indexes of the insight pages: the rollups' figures read from the index alone, their delivered
rows found directly (time to delivery); SMS of one status newest first (the history filtered to a
status or a failure reason, and its capped count)

Revision ID: 0008
Revises: 0007
Create Date: 2026-11-27 06:15:00

"""
from alembic import op


revision = '0008'
down_revision = '0007'
branch_labels = None
depends_on = None


def upgrade():
    with op.batch_alter_table('sms_rollup', schema=None) as batch_op:
        batch_op.drop_index('ix_sms_rollup_company_grain_bucket')
        batch_op.create_index('ix_sms_rollup_figures', ['company_id', 'grain', 'bucket', 'outcome', 'gateway', 'reason',
                                                        'messages', 'segments', 'cost'], unique=False)
        batch_op.create_index('ix_sms_rollup_outcome', ['company_id', 'grain', 'outcome', 'bucket'], unique=False)
    with op.batch_alter_table('sms', schema=None) as batch_op:
        batch_op.drop_index('ix_sms_company_status')
        batch_op.create_index('ix_sms_company_status_created', ['company_id', 'status', 'created_at', 'id'],
                              unique=False)


def downgrade():
    with op.batch_alter_table('sms', schema=None) as batch_op:
        batch_op.drop_index('ix_sms_company_status_created')
        batch_op.create_index('ix_sms_company_status', ['company_id', 'status'], unique=False)
    with op.batch_alter_table('sms_rollup', schema=None) as batch_op:
        batch_op.drop_index('ix_sms_rollup_outcome')
        batch_op.drop_index('ix_sms_rollup_figures')
        batch_op.create_index('ix_sms_rollup_company_grain_bucket', ['company_id', 'grain', 'bucket'], unique=False)
