from alembic import context

from linegate.db import run_migrations_online

run_migrations_online(context)
