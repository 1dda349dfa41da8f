"""the Tryton adapter's store: outbox, inbox, id map, cursors

Revision ID: t0001
Revises:
Create Date: 2026-12-04 03:00:00

"""
from typing import Sequence, Union

import sqlalchemy as sa
from alembic import op

revision: str = 't0001'
down_revision: Union[str, Sequence[str], None] = None
branch_labels: Union[str, Sequence[str], None] = None
depends_on: Union[str, Sequence[str], None] = None


def upgrade() -> None:
    big_id = sa.BigInteger().with_variant(sa.Integer(), "sqlite")
    op.create_table('outbox',
                    sa.Column('id', big_id, primary_key=True, autoincrement=True),
                    sa.Column('event_id', sa.String(36), nullable=False, unique=True),
                    sa.Column('subject', sa.String(200), nullable=False),
                    sa.Column('headers', sa.Text(), nullable=False),
                    sa.Column('payload', sa.LargeBinary(), nullable=False),
                    sa.Column('created_at', sa.DateTime(timezone=True), nullable=False))
    op.create_table('inbox',
                    sa.Column('consumer', sa.String(100), nullable=False),
                    sa.Column('message_id', sa.String(100), nullable=False),
                    sa.Column('handled_at', sa.DateTime(timezone=True), nullable=False),
                    sa.PrimaryKeyConstraint('consumer', 'message_id'))
    op.create_table('id_map',
                    sa.Column('kind', sa.String(32), nullable=False),
                    sa.Column('canonical_id', sa.String(100), nullable=False),
                    sa.Column('tryton_id', sa.BigInteger(), nullable=False),
                    sa.Column('note', sa.Text(), nullable=False),
                    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False),
                    sa.PrimaryKeyConstraint('kind', 'canonical_id'))
    op.create_table('cursors',
                    sa.Column('name', sa.String(200), primary_key=True),
                    sa.Column('position', sa.BigInteger(), nullable=False),
                    sa.Column('updated_at', sa.DateTime(timezone=True), nullable=False))


def downgrade() -> None:
    for table in ('cursors', 'id_map', 'inbox', 'outbox'):
        op.drop_table(table)
