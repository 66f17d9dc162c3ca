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
``synthetic``      a small BUSI-like data set generated from a seed
``download``       fetching and verifying the real BUSI
``models``         every network of the study
``weights``        ImageNet weights from the standard caches, or a clear error
``losses``         BCE(WithLogits), Dice, the weighted multitask loss
``metrics``        classification and segmentation metrics (plain and fastai)
``learners``       fastai Learners, training, evaluation
``saving``         the saved-model folder (safetensors + config)
``plots``          figures
``cli``            the ``busi`` command
=================  =============================================================
"""

__version__ = "0.1.0"
