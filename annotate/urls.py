from django.urls import path

from annotate.apis import (
    annotator,
    answers,
    auth,
    campaigns,
    demonstrations,
    endpoints,
    exports,
    gold,
    leaderboard,
    pool,
    quality,
    rounds,
    simulation,
    training,
)

urlpatterns = [
    path("auth/token/", auth.obtain_auth_token, name="api-token"),  # throttled: scope "login"
    # annotators
    path("campaigns/", annotator.CampaignListApi.as_view(), name="campaign-list"),
    path("campaigns/<int:campaign_id>/next/", annotator.ComparisonNextApi.as_view(), name="comparison-next"),
    path("campaigns/<int:campaign_id>/progress/", annotator.CampaignProgressApi.as_view(), name="campaign-progress"),
    path("comparisons/<int:comparison_id>/renew/", annotator.LeaseRenewApi.as_view(), name="lease-renew"),
    path("comparisons/<int:comparison_id>/skip/", annotator.ComparisonSkipApi.as_view(), name="comparison-skip"),
    path("ratings/", annotator.RatingCreateApi.as_view(), name="rating-create"),
    # campaign admins
    path("campaigns/create/", campaigns.CampaignCreateApi.as_view(), name="campaign-create"),
    path("campaigns/<int:campaign_id>/", campaigns.CampaignDetailApi.as_view(), name="campaign-detail"),
    path("campaigns/<int:campaign_id>/prompts/import/", campaigns.PromptImportApi.as_view(), name="prompt-import"),
    path("campaigns/<int:campaign_id>/answers/import/", answers.AnswerImportApi.as_view(), name="answer-import"),
    path("campaigns/<int:campaign_id>/annotators/", campaigns.CampaignAnnotatorsAddApi.as_view(), name="campaign-annotators"),
    path("campaigns/<int:campaign_id>/start/", campaigns.CampaignStartApi.as_view(), name="campaign-start"),
    # evaluation campaigns: more comparisons in the current round
    path(
        "campaigns/<int:campaign_id>/comparisons/", campaigns.EvaluationComparisonsAddApi.as_view(),
        name="evaluation-comparisons-add",
    ),
    path("campaigns/<int:campaign_id>/pause/", campaigns.CampaignPauseApi.as_view(), name="campaign-pause"),
    path("campaigns/<int:campaign_id>/resume/", campaigns.CampaignResumeApi.as_view(), name="campaign-resume"),
    path("campaigns/<int:campaign_id>/archive/", campaigns.CampaignArchiveApi.as_view(), name="campaign-archive"),
    path("campaigns/<int:campaign_id>/members/", pool.CampaignMembersApi.as_view(), name="campaign-members"),
    path(
        "campaigns/<int:campaign_id>/members/<str:username>/", pool.CampaignMemberUpdateApi.as_view(),
        name="campaign-member-update",
    ),
    path("users/", pool.UserCreateApi.as_view(), name="user-create"),
    # staff: who administers a campaign (campaign admins manage only those)
    path("campaigns/<int:campaign_id>/admins/", pool.CampaignAdminsApi.as_view(), name="campaign-admins"),
    path(
        "campaigns/<int:campaign_id>/admins/<str:username>/", pool.CampaignAdminRemoveApi.as_view(),
        name="campaign-admin-remove",
    ),
    # ML engineers
    path("campaigns/<int:campaign_id>/train/", training.TrainingTriggerApi.as_view(), name="training-trigger"),
    path("campaigns/<int:campaign_id>/models/", training.ModelVersionListApi.as_view(), name="model-versions"),
    path("training-runs/", training.TrainingRunListApi.as_view(), name="training-run-list"),
    path("training-runs/<int:run_id>/", training.TrainingRunDetailApi.as_view(), name="training-run-detail"),
    path("training-runs/<int:run_id>/cancel/", training.TrainingRunCancelApi.as_view(), name="training-run-cancel"),
    # admins and engineers: checkpoints and dataset snapshots as verified zips
    path("training-runs/<int:run_id>/dataset/", training.TrainingRunDatasetApi.as_view(), name="training-run-dataset"),
    path(
        "policy-versions/<int:version_id>/download/", training.PolicyVersionDownloadApi.as_view(),
        name="policy-version-download",
    ),
    path(
        "reward-versions/<int:version_id>/download/", training.RewardVersionDownloadApi.as_view(),
        name="reward-version-download",
    ),
    path("sft-versions/<int:version_id>/download/", training.SFTVersionDownloadApi.as_view(),
         name="sft-version-download"),
    path(
        "training-runs/<int:run_id>/sft-dataset/", training.TrainingRunSFTDatasetApi.as_view(),
        name="training-run-sft-dataset",
    ),
    # admins and engineers: data quality, leaderboard, exports
    path("campaigns/<int:campaign_id>/rounds/", rounds.RoundListApi.as_view(), name="round-list"),
    path(
        "campaigns/<int:campaign_id>/rounds/<int:index>/comparisons/", rounds.RoundComparisonsApi.as_view(),
        name="round-comparisons",
    ),
    path("campaigns/<int:campaign_id>/quality/", quality.CampaignQualityApi.as_view(), name="campaign-quality"),
    path(
        "campaigns/<int:campaign_id>/leaderboard/", leaderboard.CampaignLeaderboardApi.as_view(),
        name="campaign-leaderboard",
    ),
    path("campaigns/<int:campaign_id>/exports/", exports.ExportCreateApi.as_view(), name="export-create"),
    path("exports/<int:export_id>/download/", exports.ExportDownloadApi.as_view(), name="export-download"),
    # admins and engineers read demonstrations; campaign admins review them
    path(
        "campaigns/<int:campaign_id>/demonstrations/", demonstrations.CampaignDemonstrationsApi.as_view(),
        name="campaign-demonstrations",
    ),
    path(
        "campaigns/<int:campaign_id>/demonstrations/<int:demonstration_id>/review/",
        demonstrations.DemonstrationReviewApi.as_view(), name="demonstration-review",
    ),
    # campaign admins: the gold pool
    path("campaigns/<int:campaign_id>/gold/import/", gold.GoldImportApi.as_view(), name="gold-import"),
    path("campaigns/<int:campaign_id>/gold/", gold.GoldPoolApi.as_view(), name="gold-pool"),
    # endpoints (OpenAI-compatible servers) and generation jobs: engineers write, admins read
    path("campaigns/<int:campaign_id>/endpoints/", endpoints.CampaignEndpointsApi.as_view(), name="campaign-endpoints"),
    path("endpoints/<int:endpoint_id>/", endpoints.EndpointDetailApi.as_view(), name="endpoint-detail"),
    path("endpoints/<int:endpoint_id>/generate/", endpoints.GenerationJobStartApi.as_view(), name="generation-start"),
    path(
        "campaigns/<int:campaign_id>/generation-jobs/", endpoints.GenerationJobListApi.as_view(),
        name="generation-job-list",
    ),
    path("generation-jobs/<int:job_id>/", endpoints.GenerationJobDetailApi.as_view(), name="generation-job-detail"),
    path(
        "generation-jobs/<int:job_id>/failures/", endpoints.GenerationJobFailuresApi.as_view(),
        name="generation-job-failures",
    ),
    path("generation-jobs/<int:job_id>/cancel/", endpoints.GenerationJobCancelApi.as_view(), name="generation-job-cancel"),
    # staff: simulated raters (dry runs, load, the loop's measured gain)
    path("campaigns/<int:campaign_id>/simulate/", simulation.CampaignSimulateApi.as_view(), name="campaign-simulate"),
]
