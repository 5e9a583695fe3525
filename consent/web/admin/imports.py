"""Importing a CSV of people who consented elsewhere: upload, preview, then all or nothing."""

from __future__ import annotations

import os
import secrets
from pathlib import Path

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response
from wtforms import SelectChoice

from consent.errors import DomainError
from consent.services import imports as service
from consent.services import notices, panels
from consent.validation import whole_number
from consent.web import database, settings
from consent.web.admin import COORDINATOR, DPO, bp, roles, staff
from consent.web.admin.forms import ConfirmImportForm, ImportForm


def _folder() -> Path:
    return service.upload_folder(settings().instance_path)


def _upload(token: str) -> Path | None:
    if not (token.isascii() and token.isalnum()) or len(token) > 64:
        return None
    path = _folder() / f"{token}.csv"
    return path if path.exists() else None


def _form() -> ImportForm:
    form = ImportForm()
    with database().reader() as session:
        form.purpose.choices = [
            SelectChoice(p.key, p.title)
            for p in notices.all_purposes(session)
            if p.key not in service.NOT_IMPORTED
        ]
        choices = [("", "Not a panel import")] + [
            (str(p.id), p.name) for p in panels.all_panels(session) if p.status != "concluded"
        ]
    form.panel_choices = choices  # type: ignore[attr-defined]
    return form


@bp.route("/import", methods=["GET", "POST"])
@roles(COORDINATOR, DPO)
def import_start() -> str | Response | tuple[str, int]:
    form = _form()
    error = None
    if form.validate_on_submit():
        upload = request.files.get("file")
        if upload is None or not upload.filename:
            error = "Select a CSV file."
        else:
            token = secrets.token_hex(16)
            path = _folder() / f"{token}.csv"
            written = 0
            with os.fdopen(
                os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600), "wb"
            ) as handle:
                while chunk := upload.stream.read(1 << 20):
                    written += len(chunk)
                    if written > service.UPLOAD_MAX:
                        break
                    handle.write(chunk)
            if written > service.UPLOAD_MAX:
                path.unlink()
                error = "The file is larger than 50 MB. Split it into smaller files."
            else:
                panel = request.form.get("panel", "")
                return redirect(
                    url_for(
                        "admin.import_preview", token=token, purpose=form.purpose.data, panel=panel
                    )
                )
    return render_template("admin/import.html", form=form, error=error), (400 if error else 200)


def _panel_id() -> int | None:
    return whole_number(request.values.get("panel"))


@bp.get("/import/<token>")
@roles(COORDINATOR, DPO)
def import_preview(token: str) -> str | Response | tuple[str, int]:
    path = _upload(token)
    if path is None:
        flash("That upload has gone. Upload the file again.", "error")
        return redirect(url_for("admin.import_start"))
    purpose = request.args.get("purpose", "")
    try:
        with database().reader() as session:
            result = service.preview(session, path, purpose, panel_id=_panel_id())
    except DomainError as error:
        path.unlink(missing_ok=True)
        return render_template("admin/import.html", form=_form(), error=error.message), 400
    confirm = ConfirmImportForm(upload=token, purpose=purpose)
    return render_template(
        "admin/import_preview.html",
        result=result,
        confirm=confirm,
        panel=request.args.get("panel", ""),
    )


@bp.post("/import/confirm")
@roles(COORDINATOR, DPO)
def import_confirm() -> str | Response | tuple[str, int]:
    form = ConfirmImportForm()
    path = _upload(form.upload.data or "") if form.validate_on_submit() else None
    if path is None:
        flash("That upload has gone. Upload the file again.", "error")
        return redirect(url_for("admin.import_start"))
    user = staff()
    try:
        with database().transaction() as session:
            result = service.commit(
                session,
                path,
                form.purpose.data,
                actor=user.actor,
                actor_id=user.user_id,
                source=user.actor,
                panel_id=_panel_id(),
            )
    except DomainError as error:
        return render_template("admin/import.html", form=_form(), error=error.message), 400
    finally:
        path.unlink(missing_ok=True)
    return render_template("admin/import_done.html", result=result)
