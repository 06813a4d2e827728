"""vtabkit: VTAB-style representation evaluation — declared tasks, fixed protocols, any model."""

from vtabkit.errors import UserError
from vtabkit.models.model import Model
from vtabkit.models.registry import create_model, list_models, register_model
from vtabkit.tasks import Task, get_suite, get_task, list_suites, list_tasks

__version__ = "0.1.0"

__all__ = ["Model", "Task", "UserError", "__version__", "create_model", "get_suite", "get_task",
           "list_models", "list_suites", "list_tasks", "register_model"]
