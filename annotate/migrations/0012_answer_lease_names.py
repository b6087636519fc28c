"""The model Response is now Answer (DRF's Response had the same name) and
Assignment is Lease (what the code and the API call it); their tables,
constraints and index follow."""
import django.db.models.deletion
from django.conf import settings
from django.db import migrations, models


class Migration(migrations.Migration):
    dependencies = [
        ("annotate", "0011_campaign_kl_budget"),
        migrations.swappable_dependency(settings.AUTH_USER_MODEL),
    ]

    operations = [
        migrations.RenameModel("Response", "Answer"),
        migrations.RenameModel("Assignment", "Lease"),
        migrations.AlterField(
            model_name="answer",
            name="prompt",
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="answers", to="annotate.prompt"),
        ),
        migrations.AlterField(
            model_name="answer",
            name="policy_version",
            field=models.ForeignKey(
                blank=True, null=True, on_delete=django.db.models.deletion.CASCADE, related_name="answers",
                to="annotate.policyversion",
            ),
        ),
        migrations.RemoveConstraint(model_name="answer", name="response_unique_sample"),
        migrations.AddConstraint(
            model_name="answer",
            constraint=models.UniqueConstraint(fields=("prompt", "policy_version", "sample_index"), name="answer_unique_sample"),
        ),
        migrations.AlterField(
            model_name="lease",
            name="comparison",
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="leases", to="annotate.comparison"),
        ),
        migrations.AlterField(
            model_name="lease",
            name="annotator",
            field=models.ForeignKey(on_delete=django.db.models.deletion.CASCADE, related_name="leases", to=settings.AUTH_USER_MODEL),
        ),
        migrations.RemoveConstraint(model_name="lease", name="assignment_unique_annotator"),
        migrations.AddConstraint(
            model_name="lease",
            constraint=models.UniqueConstraint(fields=("comparison", "annotator"), name="lease_unique_annotator"),
        ),
        migrations.RenameIndex(model_name="lease", new_name="lease_annotator_status", old_name="annotate_as_annotat_8a4813_idx"),
    ]
