"""rollups: the dashboard's figures read from the index alone

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


def downgrade():
    with op.batch_alter_table('sms_rollup', schema=None) as batch_op:
        batch_op.drop_index('ix_sms_rollup_figures')
        batch_op.create_index('ix_sms_rollup_company_grain_bucket', ['company_id', 'grain', 'bucket'], unique=False)
