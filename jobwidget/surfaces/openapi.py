"""The OpenAPI document's fixed part: info, shared components and schemas. The routes' own parts come
from their docstrings (starlette's SchemaGenerator); `GET /openapi.json` serves the two merged.

A job's schema is generated from its field table and the model's types (core/fields.py), and the results'
from their dataclasses (core/schema.py): the document describes the JSON the same classes produce."""

from __future__ import annotations

from typing import Any

from jobwidget.core.fields import job_schema
from jobwidget.core.models import Job
from jobwidget.core.results import InlineProgress, ProviderCheck, SyncResult
from jobwidget.core.schema import dataclass_schema

__all__ = ["OPENAPI_BASE"]

OPENAPI_BASE: dict[str, Any] = {
    "openapi": "3.0.3",
    "info": {
        "title": "jobwidget",
        "version": "0.1.0",
        "description": (
            "Cloud fine-tuning jobs (Replicate trainings): list, sync, inline progress, server-sent events "
            "and a verified webhook receiver. Bound to 127.0.0.1 by default; when started with an API "
            "token, every route but the webhook wants `Authorization: Bearer <token>`."
        ),
    },
    "components": {
        "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
        "responses": {
            name: {
                "description": description,
                "content": {"application/json": {"schema": {"$ref": "#/components/schemas/Error"}}},
            }
            for name, description in {
                "BadRequest": "an invalid parameter or body",
                "Unauthorized": "the signature, headers or timestamp were refused",
                "NotFound": "no such job",
                "TooLarge": "the request body is over the limit",
                "Unprocessable": "the body is not a training object",
                "TooMany": "too many event streams from this address",
                "ProviderFailed": "the provider failed or could not be reached",
                "Unavailable": "rate limited, store busy, or the webhook secret not available yet",
            }.items()
        },
        "schemas": {
            "Error": {
                "type": "object",
                "required": ["error", "detail", "status"],
                "properties": {
                    "error": {"type": "string"},
                    "detail": {"type": "string"},
                    "status": {"type": "integer"},
                },
            },
            "Job": job_schema(Job),
            "History": {
                "type": "object",
                "required": ["job_id", "samples"],
                "properties": {
                    "job_id": {"type": "string"},
                    "samples": {
                        "type": "array",
                        "items": {
                            "type": "object",
                            "properties": {
                                "t": {"type": "number", "description": "epoch seconds of the read"},
                                "step": {"type": "integer", "nullable": True},
                                "total_steps": {"type": "integer", "nullable": True},
                                "loss": {"type": "number", "nullable": True},
                                "loss_nan": {"type": "boolean"},
                                "rate": {"type": "number", "nullable": True},
                                "reads": {"type": "integer"},
                            },
                        },
                    },
                },
            },
            # Generated from the dataclasses whose `to_dict` shapes these answers (core/results.py).
            "InlineProgress": dataclass_schema(InlineProgress),
            "SyncResult": dataclass_schema(SyncResult, SyncResult.JSON_FIELDS),
            "ProviderCheck": dataclass_schema(ProviderCheck),
        },
    },
}
