"""busi_lib: the small library behind the BUSI deep-learning notebooks.

Modules, one idea each:

=================  =============================================================
``data``           the BUSI folder as a table; tasks; class weights
``images``         reading scans and masks into one representation
``duplicates``     near-duplicate groups (perceptual hash) and label conflicts
``splits``         seeded, stratified, group-aware splits saved as CSV
``cache``          decode and resize once, outside the data folder
``transforms``     albumentations pipelines (scan and mask together)
``loaders``        fastai DataLoaders for classify / segment / multitask
``synthetic``      a small BUSI-like data set (and a "second hospital") from a seed
``download``       fetching and verifying the real BUSI
``models``         every network of the study
``weights``        ImageNet weights from the standard caches, or a clear error
``losses``         BCE(WithLogits), Dice, the weighted multitask loss
``metrics``        classification and segmentation metrics, bootstrap intervals
``profiles``       smoke / cpu / gpu run sizes shared by notebooks and bench
``learners``       fastai Learners, training, evaluation
``checkpoints``    a checkpoint per epoch, and resuming bit-identically
``distributed``    several processes through Accelerate (rank 0 writes)
``saving``         the saved-model folder (safetensors + config)
``predict``        predicting new scans: masks, overlays, CSV
``cam``            Grad-CAM of the classification (pytorch-grad-cam)
``calibration``    ECE, Brier, reliability, temperature scaling
``external``       scoring a saved model on a folder it never saw
``external_sets``  BUS-BRA and BUS-UCLM, as published, into a folder ``external`` reads
``report``         the external-validation report (Markdown + figures)
``bench``          leakage-free cross-validation of every model, RESULTS.md
``speed``          throughput: fastai vs a plain PyTorch loop
``plots``          figures
``study``          the study's reference numbers and cross-notebook tables
``widgets``        ipywidgets explorers, with still pictures in batch runs
``quiet``          the narrow warning filters, in one place
``notebook``       the first line of every lesson notebook
``runner``         running the notebooks with papermill (``busi notebooks``)
``cli``            the ``busi`` command
=================  =============================================================
"""

__version__ = "0.1.0"
