"""delivery insight: rollups, their change mark, the "changed since" index

Revision ID: 0007
Revises: 0006
Create Date: 2026-11-27 02:55:00

"""
from alembic import op
import sqlalchemy as sa


revision = '0007'
down_revision = '0006'
branch_labels = None
depends_on = None


def upgrade():
    op.create_table('sms_rollup',
    sa.Column('id', sa.Integer(), nullable=False),
    sa.Column('company_id', sa.Integer(), nullable=False),
    sa.Column('grain', sa.String(length=4), nullable=False),
    sa.Column('bucket', sa.DateTime(timezone=True), nullable=False),
    sa.Column('gateway', sa.String(length=32), nullable=False),
    sa.Column('trigger', sa.String(length=20), nullable=False),
    sa.Column('outcome', sa.String(length=12), nullable=False),
    sa.Column('reason', sa.String(length=160), nullable=False),
    sa.Column('messages', sa.Integer(), nullable=False),
    sa.Column('segments', sa.Integer(), nullable=False),
    sa.Column('cost', sa.Float(), nullable=False),
    sa.Column('ttd_10s', sa.Integer(), nullable=False),
    sa.Column('ttd_30s', sa.Integer(), nullable=False),
    sa.Column('ttd_1m', sa.Integer(), nullable=False),
    sa.Column('ttd_2m', sa.Integer(), nullable=False),
    sa.Column('ttd_5m', sa.Integer(), nullable=False),
    sa.Column('ttd_10m', sa.Integer(), nullable=False),
    sa.Column('ttd_30m', sa.Integer(), nullable=False),
    sa.Column('ttd_1h', sa.Integer(), nullable=False),
    sa.Column('ttd_3h', sa.Integer(), nullable=False),
    sa.Column('ttd_12h', sa.Integer(), nullable=False),
    sa.Column('ttd_1d', sa.Integer(), nullable=False),
    sa.Column('ttd_more', sa.Integer(), nullable=False),
    sa.ForeignKeyConstraint(['company_id'], ['company.id'], name=op.f('fk_sms_rollup_company_id_company'),
                            ondelete='CASCADE'),
    sa.PrimaryKeyConstraint('id', name=op.f('pk_sms_rollup')),
    sa.UniqueConstraint('company_id', 'grain', 'bucket', 'gateway', 'trigger', 'outcome', 'reason',
                        name=op.f('uq_sms_rollup_company_id'))
    )
    op.create_index('ix_sms_rollup_company_grain_bucket', 'sms_rollup', ['company_id', 'grain', 'bucket'], unique=False)
    op.create_table('rollup_mark',
    sa.Column('name', sa.String(length=32), nullable=False),
    sa.Column('changed_since', sa.DateTime(timezone=True), nullable=False),
    sa.PrimaryKeyConstraint('name', name=op.f('pk_rollup_mark'))
    )
    op.create_index('ix_sms_updated', 'sms', ['updated_at', 'company_id', 'created_at'], unique=False)


def downgrade():
    op.drop_index('ix_sms_updated', table_name='sms')
    op.drop_table('rollup_mark')
    op.drop_index('ix_sms_rollup_company_grain_bucket', table_name='sms_rollup')
    op.drop_table('sms_rollup')
