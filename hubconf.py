"""torch.hub entry points: a ready descriptor network in one line.

    model = torch.hub.load("<owner>/<repo>", "sfrs")                 # or a local clone, source="local"
    descriptor = model(model.transform("photo.jpg")[None])           # (1, 4096), L2-normalised

Every entry returns an ``EmbedNet`` (vpr.models) in eval mode on the CPU, with its PCA-whitening, and with
``model.transform``: image path or PIL image → the input tensor `vpr describe` uses (docs/workflow.md,
"Using a model elsewhere"). Files are downloaded with their SHA-256 checked (vpr.hub).

* ``sfrs``: the reference's released SFRS model (VGG16 + NetVLAD + its 4096-d PCA-whitening).
* ``netvlad``: the NetVLAD authors' VGG16 model trained on Pitts30k (MatConvNet file, whitening included).
* ``efficientnet_lite0``: an off-the-shelf model: the ImageNet EfficientNet-Lite0 trunk and NetVLAD centers
  clustered on your images (``images=["photos/"]``, as `vpr init-model`), or a model file of yours.
* ``model``: any model file vpr reads (``checkpoint=`` a path, or ``url=`` with ``sha256=``).

Keyword arguments of every entry: ``checkpoint`` (local file) or ``url`` and ``sha256``; ``pca`` (local
PCA file) or ``pca_url`` and ``pca_sha256``; ``whiten``; ``cache_dir`` (default
``<torch.hub.get_dir()>/checkpoints/vpr``). The released entries take their URL and SHA-256 from
config/released.yaml unless ``checkpoint`` or ``url`` is given.
"""

dependencies = ["torch", "torchvision", "numpy", "scipy", "h5py", "PIL", "yaml"]


def sfrs(**kwargs):
    """The released SFRS model (OpenIBL's vgg16_netvlad.pth, its PCA-whitening included): 4096-d."""
    from vpr.hub import load_released

    return load_released("sfrs", **kwargs)


def netvlad(**kwargs):
    """The NetVLAD authors' VGG16 NetVLAD model trained on Pitts30k (Pitts30K_struct.mat, whitened)."""
    from vpr.hub import load_released

    return load_released("netvlad", **kwargs)


def efficientnet_lite0(images=None, num_clusters=64, image_size=(480, 640), **kwargs):
    """An off-the-shelf EfficientNet-Lite0 + NetVLAD model: clustered on the folders ``images`` (the
    options of `vpr init-model` as keywords: num_clusters, image_size, max_images, per_image, iterations,
    seed), or loaded from ``checkpoint``/``url``."""
    from vpr.hub import off_the_shelf

    return off_the_shelf("efficientnet_lite0", images, num_clusters=num_clusters, image_size=image_size,
                         **kwargs)


def model(**kwargs):
    """Any model file vpr reads: ``checkpoint`` (path) or ``url`` (+ ``sha256``), optional PCA file."""
    from vpr.hub import load

    return load(**kwargs)
