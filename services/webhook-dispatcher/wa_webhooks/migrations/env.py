from alembic import context

from wa_common.migrations import run_env
from wa_webhooks.models import Base

run_env(context, Base.metadata)
