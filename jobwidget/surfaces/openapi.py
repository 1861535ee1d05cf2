"""The OpenAPI document's fixed part: info, shared components and schemas. The routes' own parts come
from their docstrings (starlette's SchemaGenerator); `GET /openapi.json` serves the two merged."""

from __future__ import annotations

from typing import Any

from jobwidget.core.models import JobStatus

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
            "Job": {
                "type": "object",
                "required": ["job_id", "provider", "status"],
                "properties": {
                    "job_id": {"type": "string"},
                    "provider": {"type": "string"},
                    "status": {"type": "string", "enum": [s.value for s in JobStatus]},
                    "name": {"type": "string", "nullable": True},
                    "model": {"type": "string", "nullable": True},
                    "version": {"type": "string", "nullable": True},
                    "hardware": {"type": "string", "nullable": True},
                    "created_at": {"type": "string", "format": "date-time", "nullable": True},
                    "started_at": {"type": "string", "format": "date-time", "nullable": True},
                    "completed_at": {"type": "string", "format": "date-time", "nullable": True},
                    "cost_usd": {"type": "number", "nullable": True},
                    "error_message": {"type": "string", "nullable": True},
                    "output": {"type": "object", "nullable": True},
                    "web_url": {"type": "string", "nullable": True},
                    "stage": {"type": "string", "nullable": True},
                    "progress": {"type": "number", "nullable": True},
                    "last_log": {"type": "string", "nullable": True},
                    "updated_at": {"type": "string", "format": "date-time", "nullable": True},
                    "metadata": {"type": "object"},
                    "inputs": {"type": "object", "nullable": True},
                    "retry_of": {"type": "string", "nullable": True},
                    "trained_version": {"type": "string", "nullable": True},
                    "provider_status": {"type": "string", "nullable": True},
                    "projected_finish_at": {"type": "string", "format": "date-time", "nullable": True},
                    "projected_cost_usd": {"type": "number", "nullable": True},
                    "flags": {
                        "type": "object",
                        "description": "raised health flags: nan_loss, stalled, diverging, slow_start",
                        "additionalProperties": {
                            "type": "object",
                            "properties": {"reason": {"type": "string"}, "raised_at": {"type": "number"}},
                        },
                    },
                    "guard_reason": {"type": "string", "nullable": True},
                },
            },
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
            "InlineProgress": {
                "type": "object",
                "required": ["job_id", "stage", "last_log", "progress"],
                "properties": {
                    "job_id": {"type": "string"},
                    "stage": {"type": "string", "nullable": True},
                    "last_log": {"type": "string", "nullable": True},
                    "progress": {"type": "number", "nullable": True},
                    "step": {"type": "integer", "nullable": True},
                    "total_steps": {"type": "integer", "nullable": True},
                    "rate": {"type": "number", "nullable": True},
                    "eta_seconds": {"type": "number", "nullable": True},
                    "loss": {"type": "number", "nullable": True},
                    "loss_nan": {"type": "boolean"},
                },
            },
            "SyncResult": {
                "type": "object",
                "required": ["synced", "updated", "message"],
                "properties": {
                    "synced": {"type": "integer"},
                    "updated": {"type": "integer"},
                    "message": {"type": "string"},
                },
            },
            "ProviderCheck": {
                "type": "object",
                "required": ["ok", "message", "provider"],
                "properties": {
                    "ok": {"type": "boolean"},
                    "message": {"type": "string"},
                    "provider": {"type": "string"},
                    "account": {"type": "string", "nullable": True},
                    "latency_ms": {"type": "number", "nullable": True},
                    "checked_at": {"type": "string", "format": "date-time"},
                },
            },
        },
    },
}
