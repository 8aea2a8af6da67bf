"""A cheap built-in feature map for synthetic ground truth: oriented energy and local contrast.

``filter_bank_features`` is the default ``feature_fn`` of ``make_synthetic_vim1``. It is a
plain numpy/scipy filter bank (no learned weights): quadrature Gabor energy at 4 orientations
x 2 spatial frequencies, plus local mean luminance and local RMS contrast, each averaged over
the cells of a coarse square grid.
"""

from __future__ import annotations

import numpy as np
import scipy.fft

ORIENTATIONS_DEG = (0.0, 45.0, 90.0, 135.0)
WAVELENGTHS_PX = (8.0, 16.0)
CHANNEL_NAMES = (
    *(
        f"energy_{int(theta)}deg_{int(wavelength)}px"
        for wavelength in WAVELENGTHS_PX
        for theta in ORIENTATIONS_DEG
    ),
    "luminance",
    "contrast",
)
BATCH_IMAGES = 128


def _gabor_spectra(size: int) -> tuple[np.ndarray, list[tuple[int, int]]]:
    """Fourier transforms of complex Gabor kernels, shape (n_filters, size, size), complex64,
    and each kernel's carrier frequency in whole FFT bins (row, column)."""
    coords = np.arange(size) - size // 2
    y, x = np.meshgrid(coords, coords, indexing="ij")
    spectra = []
    carriers = []
    for wavelength in WAVELENGTHS_PX:
        sigma = 0.5 * wavelength
        envelope = np.exp(-(x**2 + y**2) / (2 * sigma**2))
        for theta_deg in ORIENTATIONS_DEG:
            theta = np.deg2rad(theta_deg)
            phase = 2 * np.pi * (x * np.cos(theta) + y * np.sin(theta)) / wavelength
            kernel = envelope * np.exp(1j * phase)
            kernel -= envelope * (kernel.sum() / envelope.sum())
            kernel /= np.abs(kernel).sum()
            spectra.append(scipy.fft.fft2(scipy.fft.ifftshift(kernel)))
            carriers.append(
                (round(size * np.sin(theta) / wavelength), round(size * np.cos(theta) / wavelength))
            )
    return np.asarray(spectra, dtype=np.complex64), carriers


def _demodulated_amplitude(
    filtered: np.ndarray, carrier: tuple[int, int], out_size: int
) -> np.ndarray:
    """|inverse FFT| of a band-pass spectrum at a lower resolution.

    Shifting the spectrum by whole bins multiplies the filtered image by a phase ramp, which
    leaves its amplitude unchanged; the band then sits around zero frequency and is resampled
    onto an ``out_size`` grid by keeping only the central frequencies.
    """
    size = filtered.shape[-1]
    centred = scipy.fft.fftshift(
        np.roll(filtered, (-carrier[0], -carrier[1]), axis=(-2, -1)), axes=(-2, -1)
    )
    low = (size - out_size) // 2
    cropped = scipy.fft.ifftshift(
        centred[..., low : low + out_size, low : low + out_size], axes=(-2, -1)
    )
    scale = (out_size / size) ** 2
    return np.abs(scipy.fft.ifft2(cropped, workers=-1)) * np.float32(scale)


def _block_mean(maps: np.ndarray, grid: int) -> np.ndarray:
    """Average (..., size, size) maps over grid x grid equal square blocks."""
    size = maps.shape[-1]
    cell = size // grid
    shaped = maps.reshape(*maps.shape[:-2], grid, cell, grid, cell)
    return shaped.mean(axis=(-3, -1))


def filter_bank_features(images: np.ndarray, grid: int = 16) -> np.ndarray:
    """Oriented-energy and local-contrast feature maps pooled onto a coarse grid.

    Args:
      images: (n_images, size, size) grayscale images, any real dtype; ``size`` must be a
        multiple of ``grid``.
      grid: cells per side of the output map.

    Returns:
      float32 array (n_images, grid, grid, 10); channels as in ``CHANNEL_NAMES``: Gabor
      amplitude (quadrature-pair energy, square-rooted) at 2 wavelengths x 4 orientations,
      computed at half resolution (the amplitude of a band-pass signal is smooth), then the
      cell's mean luminance and RMS contrast.
    """
    images = np.asarray(images)
    if images.ndim != 3 or images.shape[1] != images.shape[2]:
        raise ValueError(
            f"images must be (n_images, size, size) square grayscale images, got shape "
            f"{images.shape}."
        )
    size = images.shape[1]
    if size % grid:
        raise ValueError(f"image size {size} must be a multiple of grid={grid}.")
    spectra, carriers = _gabor_spectra(size)
    energy_size = max(grid, size // 2)
    n_channels = len(CHANNEL_NAMES)
    features = np.empty((images.shape[0], grid, grid, n_channels), dtype=np.float32)
    for start in range(0, images.shape[0], BATCH_IMAGES):
        batch = images[start : start + BATCH_IMAGES].astype(np.float32)
        image_spectra = scipy.fft.fft2(batch, workers=-1)
        for channel, (spectrum, carrier) in enumerate(zip(spectra, carriers, strict=True)):
            amplitude = _demodulated_amplitude(image_spectra * spectrum, carrier, energy_size)
            features[start : start + len(batch), :, :, channel] = _block_mean(amplitude, grid)
        luminance = _block_mean(batch, grid)
        contrast = np.sqrt(np.maximum(_block_mean(batch**2, grid) - luminance**2, 0.0))
        features[start : start + len(batch), :, :, -2] = luminance
        features[start : start + len(batch), :, :, -1] = contrast
    return features
