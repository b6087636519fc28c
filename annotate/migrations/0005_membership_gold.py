import django.db.models.deletion
import django.utils.timezone
from django.conf import settings
from django.db import migrations, models

TABLE = "annotate_campaign_annotators"


class Migration(migrations.Migration):
    """Campaign.annotators gets a through model (Membership) on the table the
    plain many-to-many already had, so existing pools are kept; gold pairs;
    responses that no policy wrote."""

    dependencies = [
        ("annotate", "0004_export"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.SeparateDatabaseAndState(
            database_operations=[
                migrations.RunSQL(
                    f"ALTER TABLE {TABLE} RENAME COLUMN user_id TO annotator_id",
                    reverse_sql=f"ALTER TABLE {TABLE} RENAME COLUMN annotator_id TO user_id",
                )
            ],
            state_operations=[
                migrations.CreateModel(
                    name="Membership",
                    fields=[
                        ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                        ("campaign", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="memberships", to="annotate.campaign")),
                        ("annotator", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="memberships", to=settings.AUTH_USER_MODEL)),
                    ],
                    options={"db_table": TABLE},
                ),
                migrations.AlterField(
                    model_name="campaign",
                    name="annotators",
                    field=models.ManyToManyField(blank=True, related_name="campaigns", through="annotate.Membership", to=settings.AUTH_USER_MODEL),
                ),
            ],
        ),
        migrations.AddField(
            model_name="membership",
            name="status",
            field=models.CharField(choices=[("active", "Active"), ("paused", "Paused"), ("removed", "Removed")], default="active", max_length=10),
        ),
        migrations.AddField(model_name="membership", name="paused_reason", field=models.TextField(blank=True, default="")),
        migrations.AddField(model_name="membership", name="paused_automatically", field=models.BooleanField(default=False)),
        migrations.AddField(
            model_name="membership",
            name="daily_limit",
            field=models.PositiveIntegerField(blank=True, help_text="ratings a day; empty = no limit", null=True),
        ),
        migrations.AddField(
            model_name="membership",
            name="created_at",
            field=models.DateTimeField(auto_now_add=True, default=django.utils.timezone.now),
            preserve_default=False,
        ),
        migrations.AddConstraint(
            model_name="membership",
            constraint=models.UniqueConstraint(fields=("campaign", "annotator"), name="membership_unique_annotator"),
        ),
        migrations.AddField(model_name="campaign", name="gold_frequency", field=models.FloatField(default=0.1)),
        migrations.AddField(model_name="campaign", name="gold_min_accuracy", field=models.FloatField(default=0.6)),
        migrations.AddField(model_name="campaign", name="gold_min_count", field=models.PositiveSmallIntegerField(default=5)),
        migrations.AlterField(
            model_name="response",
            name="policy_version",
            field=models.ForeignKey(blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name="responses", to="annotate.policyversion"),
        ),
        migrations.CreateModel(
            name="GoldPair",
            fields=[
                ("id", models.BigAutoField(auto_created=True, primary_key=True, serialize=False, verbose_name="ID")),
                ("external_id", models.CharField(max_length=200)),
                ("created_at", models.DateTimeField(auto_now_add=True)),
                ("campaign", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="gold_pairs", to="annotate.campaign")),
                ("prompt", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="gold_pairs", to="annotate.prompt")),
                ("chosen", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+", to="annotate.response")),
                ("rejected", models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="+", to="annotate.response")),
            ],
            options={
                "constraints": [models.UniqueConstraint(fields=("campaign", "external_id"), name="goldpair_unique_external_id")],
            },
        ),
    ]
