"""`ProjectsService`: projects' implementation of its contract, composed of its parts."""

from __future__ import annotations

from uuid import UUID

from splitstone.kernel.http.idempotency import Idempotency
from splitstone.modules.auth.api import AuthApi
from splitstone.modules.billing.api import BillingApi
from splitstone.modules.projects.activity import ActivityLog
from splitstone.modules.projects.api import ProjectInfo, TaskInfo
from splitstone.modules.projects.comments import Comments
from splitstone.modules.projects.lists import TaskLists
from splitstone.modules.projects.projects import Projects
from splitstone.modules.projects.tasks import Tasks


class ProjectsService:
    """Implements `ProjectsApi`; routes, handlers and jobs reach the parts directly."""

    def __init__(
        self,
        *,
        projects: Projects,
        tasks: Tasks,
        lists: TaskLists,
        comments: Comments,
        activity: ActivityLog,
        auth: AuthApi,
        billing: BillingApi,
        idempotency: Idempotency,
    ) -> None:
        self.projects = projects
        self.tasks = tasks
        self.lists = lists
        self.comments = comments
        self.activity = activity
        self.auth = auth
        self.billing = billing
        self.idempotency = idempotency

    async def get_project(self, org_id: UUID, project_id: UUID) -> ProjectInfo:
        return await self.projects.info(org_id, project_id)

    async def get_task(self, org_id: UUID, task_id: UUID) -> TaskInfo:
        return await self.tasks.info(org_id, task_id)

    async def count_projects(self, org_id: UUID) -> int:
        return await self.projects.count(org_id)
