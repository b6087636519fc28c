"""The Django admin, for low-level fixes."""
from django.contrib import admin

from annotate import models


class MembershipInline(admin.TabularInline):
    model = models.Membership
    extra = 0
    raw_id_fields = ["annotator"]


@admin.register(models.Campaign)
class CampaignAdmin(admin.ModelAdmin):
    list_display = ["name", "status", "overlap", "comparisons_per_round", "created_at"]
    inlines = [MembershipInline]


@admin.register(models.TrainingRun)
class TrainingRunAdmin(admin.ModelAdmin):
    list_display = ["id", "campaign", "kind", "stage", "status", "attempts", "progress", "created_at"]
    list_filter = ["status", "kind"]


@admin.register(models.Rating)
class RatingAdmin(admin.ModelAdmin):
    list_display = ["id", "comparison", "annotator", "choice", "strength", "created_at"]
    raw_id_fields = ["comparison"]


for model in [models.GoldPair, models.Prompt, models.PolicyVersion, models.RewardModelVersion, models.SFTModelVersion,
              models.Round, models.Answer, models.Comparison, models.Lease]:
    admin.site.register(model)


@admin.register(models.ExternalModel)
class ExternalModelAdmin(admin.ModelAdmin):
    list_display = ["id", "campaign", "name", "kind", "base_url", "model_name", "created_at"]
    # The key is write-only everywhere (docs/models.md): the API and the console set it.
    exclude = ["api_key"]


@admin.register(models.GenerationJob)
class GenerationJobAdmin(admin.ModelAdmin):
    list_display = ["id", "model", "status", "answered", "failed", "requests", "created_at"]
    list_filter = ["status"]


@admin.register(models.Demonstration)
class DemonstrationAdmin(admin.ModelAdmin):
    list_display = ["id", "comparison", "annotator", "origin", "status", "diff_chars", "created_at"]
    list_filter = ["status"]
    raw_id_fields = ["comparison", "rating"]
