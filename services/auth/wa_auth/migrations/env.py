from alembic import context

from wa_auth.models import Base
from wa_common.migrations import run_env

run_env(context, Base.metadata)
