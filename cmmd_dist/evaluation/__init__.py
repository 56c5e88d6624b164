"""The figures of DESIGN.md section 1 for CMMD and every baseline: prediction, error / mAP, RMSE of generated
modalities, posterior collapse, latent classification (:mod:`.metrics`) and coherence (:mod:`.coherence`).
Imports the model, datasets and config layers; never the training loop, Ray or MLflow."""
