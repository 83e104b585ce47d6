"""The pack's ComfyUI socket types and menu categories (type names are part of the workflow format)."""

BINDINGS = "CONES2_BINDINGS"  # list of residual bindings, from Cones2LoadResidual / Cones2BindResidual
RESIDUAL = "CONES2_RESIDUAL"  # a training.residual_file.Residual, e.g. from Cones2TrainResidual
LAYOUT = "CONES2_LAYOUT"  # a guidance.layout.Layout
SUBJECT_PHOTOS = "CONES2_SUBJECT_PHOTOS"  # tuple of guidance.init_latent.SubjectPhoto, from Cones2SubjectPhoto

CATEGORY = "cones2"
LAYOUT_CATEGORY = "cones2/layout"
TRAINING_CATEGORY = "cones2/training"
LATENT_CATEGORY = "cones2/latent"

SUBJECT_REFERENCES = "CONES2_SUBJECT_REFERENCES"  # a tuple of scoring.references.SubjectPhotos
SCORES = "CONES2_SCORES"  # a scoring.score_report.ScoreReport, from Cones2ScoreSubjects
DINOV2 = "CONES2_DINOV2"  # a comfy_adapters.image_encoders.Dinov2Encoder
SCORING_CATEGORY = "cones2/scoring"
