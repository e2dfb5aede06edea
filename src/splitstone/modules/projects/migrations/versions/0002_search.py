"""projects: full-text search over tasks' title and description.

PostgreSQL: a generated `search` tsvector column ('simple' configuration: no stemming, no stop words,
so the same words match in every language) with a GIN index. SQLite: an FTS5 table `tasks_fts` with
external content on `tasks` (by rowid), kept in sync by triggers, its tokenizer keeping diacritics as
PostgreSQL's does. Neither is in `storage.py`'s
metadata: they are dialect-specific, and `lists.py` reaches them by name.

On SQLite, `VACUUM` may renumber the rowids of `tasks` (it has no INTEGER PRIMARY KEY): after one,
run `INSERT INTO projects.tasks_fts(tasks_fts) VALUES ('rebuild')`.

Revision ID: 0002
Revises: 0001
Create Date: 2026-11-26
"""

from alembic import op

revision = "0002"
down_revision = "0001"
branch_labels = None
depends_on = None

POSTGRES_UP = [
    """ALTER TABLE projects.tasks ADD COLUMN search tsvector GENERATED ALWAYS AS (
        to_tsvector('simple', coalesce(title, '') || ' ' || coalesce(description, ''))
    ) STORED""",
    "CREATE INDEX ix_tasks_search ON projects.tasks USING gin (search)",
    # A search sorted by id with a LIMIT is read either from the GIN index (rare words) or by walking
    # the id index and filtering (common words); the planner picks by the word's estimated frequency,
    # and the default sample misses rare words often enough to choose a full walk for them.
    "ALTER TABLE projects.tasks ALTER COLUMN search SET STATISTICS 1000",
]
POSTGRES_DOWN = [
    "DROP INDEX IF EXISTS projects.ix_tasks_search",
    "ALTER TABLE projects.tasks DROP COLUMN IF EXISTS search",
]

# The module's schema is always `projects` (on SQLite, its attached file). Triggers of an attached
# database name their tables unqualified: they live in the same schema.
SQLITE_UP = [
    """CREATE VIRTUAL TABLE projects.tasks_fts USING fts5(
        title, description, content='tasks', content_rowid='rowid',
        tokenize='unicode61 remove_diacritics 0'
    )""",
    """CREATE TRIGGER projects.tasks_fts_ai AFTER INSERT ON tasks BEGIN
        INSERT INTO tasks_fts (rowid, title, description) VALUES (new.rowid, new.title, new.description);
    END""",
    """CREATE TRIGGER projects.tasks_fts_ad AFTER DELETE ON tasks BEGIN
        INSERT INTO tasks_fts (tasks_fts, rowid, title, description)
        VALUES ('delete', old.rowid, old.title, old.description);
    END""",
    """CREATE TRIGGER projects.tasks_fts_au AFTER UPDATE OF title, description ON tasks BEGIN
        INSERT INTO tasks_fts (tasks_fts, rowid, title, description)
        VALUES ('delete', old.rowid, old.title, old.description);
        INSERT INTO tasks_fts (rowid, title, description) VALUES (new.rowid, new.title, new.description);
    END""",
    # Index the tasks that exist already.
    "INSERT INTO projects.tasks_fts (tasks_fts) VALUES ('rebuild')",
]
SQLITE_DOWN = [
    "DROP TRIGGER IF EXISTS projects.tasks_fts_au",
    "DROP TRIGGER IF EXISTS projects.tasks_fts_ad",
    "DROP TRIGGER IF EXISTS projects.tasks_fts_ai",
    "DROP TABLE IF EXISTS projects.tasks_fts",
]


def _run(postgres: list[str], sqlite: list[str]) -> None:
    bind = op.get_bind()
    dialect = bind.dialect.name
    if dialect == "postgresql":
        statements = postgres
    elif dialect == "sqlite":
        statements = sqlite
    else:  # pragma: no cover - only the two supported databases
        raise NotImplementedError("projects search needs PostgreSQL or SQLite, not {dialect}")
    for statement in statements:
        op.execute(statement)


def upgrade() -> None:
    _run(POSTGRES_UP, SQLITE_UP)


def downgrade() -> None:
    _run(POSTGRES_DOWN, SQLITE_DOWN)
