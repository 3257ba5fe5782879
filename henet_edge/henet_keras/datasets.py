"""What a run feeds the network: the seeded tf.data pipelines and their one augmentation.

Training and the weight average's batch-norm sample (:func:`recalibration_batches`)
both draw their images through the one :func:`augmenter` (and, with ``--mixup``, the
one :func:`mixup_weights` and :func:`blend`), so what the statistics see is what the
weights trained on; validation takes the centre crop, as the device does.
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np

from henet_edge.device.preprocess import Preprocessing

from .data import AUGMENTS, ImageSet

PAD = 4  # "cifar" augmentation: zero-pad by this much, then a random crop and flip
RECALIBRATION_IMAGES = 4096  # training images that give the averaged weights their BN statistics
MIXUP_SALT = 0x317  # keeps the mixup weights' random stream apart from the crops'


def augmenter(spec: Preprocessing, augment: str, seed: int) -> Callable:
    """``(uint8 image, position) -> normalised float32 input``: what training feeds the network.

    ``"cifar"`` zero-pads by :data:`PAD`, then takes a random crop and flip keyed by
    ``(seed, position)``, so the same position always gets the same view; ``"flip"``
    takes the centre crop and flips it the same way (no padded borders); ``"none"``
    takes the centre crop, as evaluation and the device do.
    """
    import tensorflow as tf

    from henet_edge.device.preprocess import normalize

    if augment not in AUGMENTS:
        raise ValueError(f"unknown augmentation {augment!r}; choose one of {', '.join(AUGMENTS)}")
    size, o = spec.input_size, spec.crop_offset()

    def augmented(image, position):
        key = tf.stack([tf.constant(seed, tf.int64), tf.cast(position, tf.int64)])
        if augment == "cifar":
            image = tf.pad(image, [[PAD, PAD], [PAD, PAD], [0, 0]])
            image = tf.image.stateless_random_crop(image, (size, size, 3), seed=key)
        else:
            image = image[o:o + size, o:o + size, :]
        if augment in ("cifar", "flip"):
            image = tf.image.stateless_random_flip_left_right(image, seed=key + 1)
        return normalize(tf.cast(image, tf.float32), spec)

    return augmented


def mixup_weights(alpha: float, seed: int) -> Callable:
    """``(n, key) -> n blending weights`` from Beta(alpha, alpha), keyed by ``(seed, key)``.

    The same key always gives the same weights, so a resumed run mixes its batches
    as the uninterrupted run would have.
    """
    import tensorflow as tf

    def weights(n, key):
        pair = tf.stack([tf.constant(seed, tf.int64), tf.cast(key, tf.int64)])
        first, second = tf.unstack(tf.random.experimental.stateless_split(
            tf.random.experimental.stateless_fold_in(pair, MIXUP_SALT), 2))
        a = tf.random.stateless_gamma([n], seed=first, alpha=alpha)
        b = tf.random.stateless_gamma([n], seed=second, alpha=alpha)
        return a / tf.maximum(a + b, 1e-12)

    return weights


def blend(batch, weights):
    """Mixup: item ``i`` becomes ``w_i * batch[i] + (1 - w_i) * batch[n - 1 - i]``.

    Applied with the same weights to the images and to their labels. Each image is
    blended with its mirror in the (already shuffled) batch.
    """
    import tensorflow as tf

    w = tf.reshape(tf.cast(weights, batch.dtype), [-1] + [1] * (len(batch.shape) - 1))
    return w * batch + (1.0 - w) * tf.reverse(batch, [0])


def make_datasets(train: ImageSet, val: ImageSet, *, spec: Preprocessing, augment: str,
                  batch_size: int, steps_per_epoch: int, first_epoch: int, last_epoch: int,
                  seed: int, classes: int, soft_targets: Callable | None = None,
                  mixup: float | None = None):
    """Deterministic tf.data pipelines; epoch ``e`` sees the permutation seeded by (seed, e).

    With ``mixup`` (the Beta distribution's alpha), each training batch is blended
    (:func:`blend`), images and labels alike, keyed by the batch's first position.
    With ``soft_targets`` (distillation), each training batch's targets are the one-hot
    labels followed by the teachers' soft labels for those same (blended) images: the
    teachers label exactly what the student sees.
    """
    import tensorflow as tf

    from henet_edge.device.preprocess import normalize

    n_used = steps_per_epoch * batch_size
    order = np.concatenate([
        np.random.default_rng([seed, e]).permutation(len(train))[:n_used]
        for e in range(first_epoch, last_epoch)
    ]).astype(np.int64)
    positions = np.arange(first_epoch * n_used, last_epoch * n_used, dtype=np.int64)
    images = tf.constant(train.images)
    labels = tf.one_hot(train.labels, classes)
    augmented = augmenter(spec, augment, seed)

    def load(index, position):
        return augmented(tf.gather(images, index), position), tf.gather(labels, index), position

    weights = None if mixup is None else mixup_weights(mixup, seed)

    def mix(x, y, position):
        if weights is None:
            return x, y
        w = weights(batch_size, position[0])
        return blend(x, w), blend(y, w)

    train_ds = (tf.data.Dataset.from_tensor_slices((order, positions))
                .map(load, num_parallel_calls=tf.data.AUTOTUNE, deterministic=True)
                .batch(batch_size, drop_remainder=True)
                .map(mix))
    if soft_targets is not None:
        train_ds = train_ds.map(lambda x, y: (x, tf.concat([y, soft_targets(x)], axis=-1)))
    train_ds = train_ds.prefetch(tf.data.AUTOTUNE)
    o, size = spec.crop_offset(), spec.input_size
    val_x = normalize(val.images[:, o:o + size, o:o + size, :], spec).astype(np.float32)
    val_ds = (tf.data.Dataset.from_tensor_slices((val_x, tf.one_hot(val.labels, classes)))
              .batch(500).cache().prefetch(tf.data.AUTOTUNE))
    return train_ds, val_ds


def recalibration_batches(train: ImageSet, spec: Preprocessing, *, batch_size: int,
                          seed: int, augment: str = "cifar", mixup: float | None = None,
                          images: int = RECALIBRATION_IMAGES) -> list[np.ndarray]:
    """A seeded sample of the training split, augmented as in training and normalised.

    The averaged weights' batch-norm statistics are computed on it (:mod:`.ema`).
    It must look like what the weights trained on, so it is drawn by training's own
    :func:`augmenter`: centre crops without the padded borders give other statistics,
    and with them even the raw weights lose about 4 points. The same run always draws
    the same sample, so a resume ships the same model. A run trained with ``mixup``
    gets its sample blended the same way, batch by batch.
    """
    import tensorflow as tf

    rng = np.random.default_rng([seed, 0xE3A])
    n = min(images, len(train))
    # Shuffled, not sorted: the split is stored class by class, and batches of one
    # class have a far smaller variance in the deep layers than training's mixed batches.
    pick = rng.permutation(len(train))[:n]
    # Positions below zero: views that no training step draws, but drawn the same way.
    augmented = augmenter(spec, augment, seed)
    views = (tf.data.Dataset.from_tensor_slices((train.images[pick], -1 - np.arange(n)))
             .map(augmented).batch(n))
    x = next(iter(views)).numpy()
    batches = [x[i:i + batch_size] for i in range(0, n, batch_size)]
    if mixup is None:
        return batches
    weights = mixup_weights(mixup, seed)  # keys below zero, like the positions above
    return [blend(b, weights(len(b), -1 - i)).numpy() for i, b in enumerate(batches)]
