"""Campaign admins become per campaign: Campaign.admins. Each existing
campaign's creator becomes its first admin, so nobody loses the campaigns
they made; campaigns with no creator are managed by staff until staff add
admins (POST /api/campaigns/<id>/admins/ or the console's pool page)."""
from django.conf import settings
from django.db import migrations, models


def creators_become_admins(apps, schema_editor):
    Campaign = apps.get_model("annotate", "Campaign")
    Admin = Campaign.admins.through
    Admin.objects.bulk_create(
        [
            Admin(campaign_id=pk, user_id=user_id)
            for pk, user_id in Campaign.objects.exclude(created_by=None).values_list("pk", "created_by_id")
        ],
        ignore_conflicts=True,
    )


class Migration(migrations.Migration):

    dependencies = [
        ("annotate", "0008_run_heartbeat"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.AddField(
            model_name="campaign",
            name="admins",
            field=models.ManyToManyField(
                blank=True, related_name="administered_campaigns", to=settings.AUTH_USER_MODEL
            ),
        ),
        # Reversing drops the table: nothing to undo.
        migrations.RunPython(creators_become_admins, migrations.RunPython.noop),
    ]
