"""Create the demo user named by ``ARENA_DEMO_USER`` / ``ARENA_DEMO_PASSWORD`` (a demo project)."""

from __future__ import annotations

from typing import Any

from django.conf import settings
from django.contrib.auth.hashers import make_password
from django.db import migrations


def create_demo_user(apps: Any, schema_editor: Any) -> None:
    username = getattr(settings, "ARENA_DEMO_USER", "")
    if not username:
        return
    user_model = apps.get_model(*settings.AUTH_USER_MODEL.split("."))
    db = schema_editor.connection.alias
    if not user_model.objects.using(db).filter(username=username).exists():
        user_model.objects.using(db).create(
            username=username, password=make_password(settings.ARENA_DEMO_PASSWORD)
        )


class Migration(migrations.Migration):
    dependencies = [
        ("arena", "0001_initial"),
        ("auth", "0012_alter_user_first_name_max_length"),
    ]

    operations = [migrations.RunPython(create_demo_user, migrations.RunPython.noop)]
