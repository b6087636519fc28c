from django.db import migrations, models


class Migration(migrations.Migration):
    """A cancelled training run no longer holds its round's one-run slot, so
    the round can be trained on again after a cancel."""

    dependencies = [
        ("annotate", "0005_membership_gold"),
    ]

    operations = [
        migrations.RemoveConstraint(model_name="trainingrun", name="run_one_per_round"),
        migrations.AddConstraint(
            model_name="trainingrun",
            constraint=models.UniqueConstraint(
                condition=models.Q(("round__isnull", False), models.Q(("status", "cancelled"), _negated=True)),
                fields=("round", "kind"),
                name="run_one_per_round",
            ),
        ),
    ]
