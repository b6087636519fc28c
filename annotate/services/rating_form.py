"""The rating form's version: what a rating page was built to ask.

A rating page reads its campaign's form settings once, when it loads (the
aspects and whether they are required, and whether it takes written
answers), and its outbox may send a rating minutes later. If a campaign
admin changes those settings in between, the rating was made under the old
form and would now be refused (an aspect that was renamed, one made
required, written answers switched off), and what the annotator did would
be lost. So the page sends the version it was built from with each rating;
when that is not the campaign's current version, services/ratings.py
stores the rating as it was made (docs/api.md, "Ratings": `form`) instead
of refusing it. A client that sends no version is checked strictly."""
import hashlib
import json


def rating_form_version(*, aspects: list, aspects_required: bool, demonstrations: str) -> str:
    """A short fingerprint of the form settings a rating is checked against."""
    settings = {"aspects": aspects or [], "aspects_required": bool(aspects_required),
                "demonstrations": demonstrations}
    return hashlib.sha256(json.dumps(settings, sort_keys=True).encode()).hexdigest()[:16]
