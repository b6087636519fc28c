from django.db import migrations, models


class Migration(migrations.Migration):
    """Several comparisons per prompt in a round: candidate against reference
    beside candidate against baseline (loop rounds), and every pair of models
    on a prompt (evaluation rounds). The pair of answers stays unique."""

    dependencies = [
        ('annotate', '0013_external_models'),
    ]

    operations = [
        migrations.RemoveConstraint(
            model_name='comparison',
            name='comparison_unique_prompt',
        ),
        migrations.AddConstraint(
            model_name='comparison',
            constraint=models.UniqueConstraint(fields=('round', 'prompt', 'response_a', 'response_b'), name='comparison_unique_pair'),
        ),
    ]
