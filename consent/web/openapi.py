"""The OpenAPI 3.1 description of ``/api/v1``, served at ``/api/v1/openapi.json``.

The tests check it is valid, that it names every route the blueprint has, and that real
responses match its schemas, so it cannot drift from the code unnoticed.
"""

from __future__ import annotations

from functools import cache
from typing import Any

from consent.models.api_keys import SCOPES
from consent.services.reports import REPORTS

_TIME = {"type": ["string", "null"], "format": "date-time"}


def _problem(description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {
            "application/problem+json": {"schema": {"$ref": "#/components/schemas/Problem"}}
        },
    }


def _ok(schema: str, description: str) -> dict[str, Any]:
    return {
        "description": description,
        "content": {"application/json": {"schema": {"$ref": f"#/components/schemas/{schema}"}}},
    }


_UNAUTHORISED = _problem("No API key, or one that is not known or has been revoked.")
_FORBIDDEN = _problem("The key does not have the permission this call needs.")

_SCHEMAS: dict[str, Any] = {
    "Problem": {
        "type": "object",
        "required": ["type", "title", "status", "detail"],
        "properties": {
            "type": {"type": "string"},
            "title": {"type": "string"},
            "status": {"type": "integer"},
            "detail": {"type": "string"},
            "field": {"type": "string", "description": "The request field at fault."},
        },
    },
    "Notice": {
        "type": "object",
        "required": ["version", "published_at", "statement"],
        "additionalProperties": False,
        "properties": {
            "version": {"type": "integer"},
            "published_at": {"type": "string", "format": "date-time"},
            "statement": {"type": "string", "description": "The wording a person agrees to."},
        },
    },
    "Purpose": {
        "type": "object",
        "required": ["key", "title", "summary", "lawful_basis", "retention", "notice"],
        "additionalProperties": False,
        "properties": {
            "key": {"type": "string"},
            "title": {"type": "string"},
            "summary": {"type": "string"},
            "lawful_basis": {"type": "string"},
            "retention": {"type": "string"},
            "notice": {"$ref": "#/components/schemas/Notice"},
        },
    },
    "Purposes": {
        "type": "object",
        "required": ["purposes"],
        "additionalProperties": False,
        "properties": {
            "purposes": {"type": "array", "items": {"$ref": "#/components/schemas/Purpose"}}
        },
    },
    "LookupRequest": {
        "type": "object",
        "required": ["email"],
        "properties": {"email": {"type": "string", "format": "email", "maxLength": 254}},
    },
    "ConsentStatus": {
        "type": "object",
        "required": ["purpose", "status", "since", "expires_at", "notice_version"],
        "additionalProperties": False,
        "properties": {
            "purpose": {"type": "string"},
            "status": {
                "enum": ["given", "withdrawn", "expired", "none"],
                "description": "Only 'given' allows contact for the purpose. A consent past "
                "its end date is 'expired' even before the nightly sweep records it.",
            },
            "since": _TIME,
            "expires_at": {**_TIME, "description": "When a given consent runs out, if it does."},
            "notice_version": {"type": ["integer", "null"]},
        },
    },
    "Lookup": {
        "type": "object",
        "required": ["known", "consents"],
        "additionalProperties": False,
        "properties": {
            "known": {"type": "boolean", "description": "Whether anyone holds this address."},
            "consents": {
                "type": "array",
                "items": {"$ref": "#/components/schemas/ConsentStatus"},
            },
        },
    },
    "ReportRow": {
        "type": "object",
        "required": ["scope", "scope_name", "measure", "value", "count", "shown"],
        "additionalProperties": False,
        "properties": {
            "scope": {"type": "string", "description": "all, panel:ID or workshop:ID"},
            "scope_name": {"type": "string"},
            "measure": {"type": "string"},
            "value": {"type": "string"},
            "count": {
                "type": ["integer", "null"],
                "description": "Null when the count is withheld as too small to publish "
                "safely, or because a small count could be worked out from it (beside it, "
                "or in one of its months).",
            },
            "shown": {"type": "string", "description": "The count as the reports show it."},
        },
    },
    "Report": {
        "type": "object",
        "required": ["report", "title", "from", "to", "breakdown", "rows"],
        "additionalProperties": False,
        "properties": {
            "report": {"enum": sorted(REPORTS)},
            "title": {"type": "string"},
            "from": {"type": "string"},
            "to": {"type": "string"},
            "breakdown": {"type": "string"},
            "rows": {"type": "array", "items": {"$ref": "#/components/schemas/ReportRow"}},
        },
    },
}

_MONTH = {"type": "string", "pattern": "^[0-9]{4}-(0[1-9]|1[0-2])$", "example": "2027-03"}

_PATHS: dict[str, Any] = {
    "/openapi.json": {
        "get": {
            "operationId": "openapi",
            "summary": "This description",
            "security": [],
            "responses": {"200": {"description": "The OpenAPI document."}},
        }
    },
    "/purposes": {
        "get": {
            "operationId": "purposes",
            "summary": "What people can agree to, with the current wording of each",
            "responses": {
                "200": _ok("Purposes", "Every purpose in the order the pages show them."),
                "401": _UNAUTHORISED,
            },
        }
    },
    "/consents/lookup": {
        "post": {
            "operationId": "consent_lookup",
            "summary": "Which purposes a person has agreed to, by email address",
            "description": "Needs the consents:read permission. The address goes in the body, "
            "never the web address, so it stays out of logs. Every lookup is written to the "
            "council's audit log under the key that made it.",
            "security": [{"apiKey": ["consents:read"]}],
            "requestBody": {
                "required": True,
                "content": {
                    "application/json": {"schema": {"$ref": "#/components/schemas/LookupRequest"}}
                },
            },
            "responses": {
                "200": _ok("Lookup", "Every purpose with the person's status in it."),
                "400": _problem("The body is not a JSON object with a valid email address."),
                "401": _UNAUTHORISED,
                "403": _FORBIDDEN,
                "415": _problem("The body is not sent as application/json."),
                "429": _problem("Too many lookups with this key in the last minute."),
            },
        }
    },
    "/reports/{name}": {
        "get": {
            "operationId": "report",
            "summary": "Anonymised counts, summed over a range of months",
            "description": "Needs the reports:read permission. Counts from 1 to 4 are withheld, "
            "as on the council's own report pages. Breakdowns by special category answers "
            "are not available through the API.",
            "security": [{"apiKey": ["reports:read"]}],
            "parameters": [
                {
                    "name": "name",
                    "in": "path",
                    "required": True,
                    "schema": {"enum": sorted(REPORTS)},
                },
                {"name": "from", "in": "query", "required": True, "schema": _MONTH},
                {"name": "to", "in": "query", "required": True, "schema": _MONTH},
                {
                    "name": "breakdown",
                    "in": "query",
                    "required": False,
                    "description": "What to break the counts down by: `purpose` for the "
                    "consents report (its default), `all` (the default) or a recorded "
                    "breakdown such as `age_band` for the others.",
                    "schema": {"type": "string"},
                },
            ],
            "responses": {
                "200": _ok("Report", "One row per scope, measure and value."),
                "400": _problem("A month is missing or not written like 2027-03."),
                "401": _UNAUTHORISED,
                "403": _problem(
                    "The key lacks reports:read, or the breakdown is special category."
                ),
                "404": _problem("There is no report with that name."),
            },
        }
    },
}


@cache
def document() -> dict[str, Any]:
    return {
        "openapi": "3.1.0",
        "info": {
            "title": "Consent and panel membership API",
            "version": "1",
            "description": "For other council systems. Ask an administrator for a key; send it "
            "as Authorization: Bearer KEY. Errors are RFC 9457 problem documents.",
        },
        "servers": [{"url": "/api/v1"}],
        "security": [{"apiKey": []}],
        "paths": _PATHS,
        "components": {
            "schemas": _SCHEMAS,
            "securitySchemes": {
                "apiKey": {
                    "type": "http",
                    "scheme": "bearer",
                    "description": "Permissions: "
                    + "; ".join(f"{scope}: {words}" for scope, words in SCOPES.items()),
                }
            },
        },
    }
