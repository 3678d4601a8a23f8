from alembic import context

from wa_common.migrations import run_env
from wa_stats.models import Base

run_env(context, Base.metadata)
