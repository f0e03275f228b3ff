"""Only the optional C accelerator lives here; everything else is in pyproject.toml.

`optional=True`: without a C compiler the install still succeeds and otelpg maps attributes in
pure Python (slower, identical results; `otelpg run` then logs a warning saying so).
"""

from setuptools import Extension, setup

setup(
    ext_modules=[
        Extension(
            "exporters.postgres.mapping._fast",
            ["exporters/postgres/mapping/_fast.c"],
            extra_compile_args=["-O2"],
            optional=True,
        ),
        Extension("sidecar._otlpwire", ["sidecar/_otlpwire.c"], extra_compile_args=["-O2"], optional=True),
    ]
)
