"""The optional C extensions and the migrations' place in the wheel; everything else is in
pyproject.toml.

`optional=True`: without a C compiler the install still succeeds and otelpg runs the pure-Python
twins (slower, identical results; `otelpg run` then logs a warning saying so).

The SQL migrations live in the repository's top-level `migrations/`; a wheel carries them as
`exporters/postgres/migrations/*.sql` (package data), where `exporters.postgres.migrate` finds them once installed.
"""

from pathlib import Path

from setuptools import Extension, setup
from setuptools.command.build_py import build_py


class BuildWithMigrations(build_py):
    def run(self) -> None:
        super().run()
        target = Path(self.build_lib) / "exporters" / "postgres" / "migrations"
        target.mkdir(parents=True, exist_ok=True)
        for sql in sorted(Path("migrations").glob("*.sql")):
            self.copy_file(str(sql), str(target / sql.name))


setup(
    cmdclass={"build_py": BuildWithMigrations},
    ext_modules=[
        Extension(
            "exporters.postgres.mapping._fast",
            ["exporters/postgres/mapping/_fast.c"],
            depends=["exporters/postgres/mapping/_wire.h"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension(
            "exporters.postgres.mapping._native",
            ["exporters/postgres/mapping/_native.c"],
            depends=["exporters/postgres/mapping/_wire.h"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension(
            "sidecar.pipeline._otlpwire", ["sidecar/pipeline/_otlpwire.c"], extra_compile_args=["-O2"], optional=True
        ),
    ],
)
