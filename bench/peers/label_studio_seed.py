"""Annotator accounts for the Label Studio peer of bench/load.py.

Runs with Label Studio's own interpreter (bench/.peers/label-studio/bin/python)
and its settings, after `label-studio init` made the database, the admin and
the organization. Label Studio has no API that creates users without an
invitation e-mail, so this uses its ORM, as its own `label-studio init` does:
each user joins the organization and gets the legacy API token that
`Authorization: Token ...` takes.

    python label_studio_seed.py N   ->  prints one JSON line: [[user_id, token], ...]
"""
import json
import os
import sys
from pathlib import Path


def main() -> None:
    n = int(sys.argv[1])
    import label_studio

    ls_path = str(Path(label_studio.__file__).resolve().parent)
    sys.path.insert(0, ls_path)
    os.environ.setdefault("DJANGO_SETTINGS_MODULE", "core.settings.label_studio")
    import django

    django.setup()
    from django.contrib.auth.hashers import make_password
    from organizations.models import Organization
    from rest_framework.authtoken.models import Token
    from users.models import User

    org = Organization.objects.order_by("pk").first()
    # One hash for all: hashing 500 passwords would take minutes and nobody logs in with them.
    password = make_password("annotator-password")
    out = []
    for i in range(n):
        email = f"annotator{i:04d}@bench.local"
        user = User.objects.filter(email=email).first()
        if user is None:
            user = User.objects.create(email=email, username=f"annotator{i:04d}", password=password)
        org.add_user(user)
        if user.active_organization_id != org.pk:
            user.active_organization = org
            user.save(update_fields=["active_organization"])
        token, _ = Token.objects.get_or_create(user=user)
        out.append([user.pk, token.key])
    print(json.dumps(out))


if __name__ == "__main__":
    main()
