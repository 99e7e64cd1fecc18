"""The naive baseline: FastAPI + uvicorn, one asyncpg INSERT per request.

Labelled baseline, NOT Gelombang's design. It is what a typical team would
build first: pydantic parses and checks the JSON, each request takes a
connection from an asyncpg pool and INSERTs one row into a table with a
unique NIK and a unique email (PostgreSQL with fsync on, so every 202 waits
for its own commit's WAL flush), answering 202, or 409 on a unique
violation. No sealing, no admission control, no queue. The door benchmark
measures it beside the door so "n x the naive design" is a measured figure.

Run: `NAIVE_DSN=postgresql://… uvicorn benchmarks.baselines.naive_fastapi:app`.
"""

from __future__ import annotations

import datetime
import os
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from typing import Annotated

import asyncpg
from fastapi import FastAPI
from fastapi.responses import JSONResponse
from pydantic import BaseModel, Field

DSN_ENV = "NAIVE_DSN"

SCHEMA = """
CREATE TABLE IF NOT EXISTS naive_registrations (
    id uuid PRIMARY KEY,
    nik text NOT NULL UNIQUE,
    full_name text NOT NULL,
    email text NOT NULL UNIQUE,
    phone text NOT NULL,
    birth_date date NOT NULL,
    consent boolean NOT NULL,
    created_at timestamptz NOT NULL DEFAULT now()
)
"""

INSERT = """
INSERT INTO naive_registrations (id, nik, full_name, email, phone, birth_date, consent)
VALUES ($1, $2, $3, $4, $5, $6, $7)
"""


class Registration(BaseModel):
    """The registration form, checked the way a typical team would with pydantic."""

    nik: Annotated[str, Field(pattern=r"^\d{16}$")]
    full_name: Annotated[str, Field(min_length=1, max_length=200)]
    # A plain pattern: email-validator is not a dependency of this project.
    email: Annotated[str, Field(pattern=r"^[^@\s]+@[^@\s]+\.[^@\s]+$", max_length=254)]
    phone: Annotated[str, Field(min_length=8, max_length=20)]
    birth_date: datetime.date
    consent: bool


@asynccontextmanager
async def lifespan(app: FastAPI) -> AsyncIterator[None]:
    """One pool for the process (asyncpg's default size, 10), the table created once."""
    pool = await asyncpg.create_pool(os.environ[DSN_ENV])
    await pool.execute(SCHEMA)
    app.state.pool = pool
    yield
    await pool.close()


app = FastAPI(lifespan=lifespan, openapi_url=None, docs_url=None, redoc_url=None)


@app.post("/v1/registrations", status_code=202)
async def register(registration: Registration) -> JSONResponse:
    """INSERT the row; 202 once it is committed, 409 when the NIK or email exists."""
    registration_id = uuid.uuid4()
    pool: asyncpg.Pool = app.state.pool
    try:
        await pool.execute(INSERT, registration_id, registration.nik, registration.full_name,
                           registration.email, registration.phone, registration.birth_date,
                           registration.consent)
    except asyncpg.UniqueViolationError:
        return JSONResponse({"error": "duplicate"}, status_code=409)
    return JSONResponse({"registration_id": str(registration_id), "status": "accepted"},
                        status_code=202)
