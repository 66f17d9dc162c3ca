"""From the folder on disk to fastai DataLoaders: the table, images, duplicates, the cache, the dataset, splits,
transforms, loaders, the synthetic BUSI, the download, and external sets."""
