"""The usual Python input pipeline, as the baseline of bench/compare_loader_python.sh.

torchvision + PIL + DataLoader with N workers: each sample is a content and a
style image, each resized (shorter side), randomly cropped, randomly flipped,
turned into a tensor and normalised to [-1, 1] -- what atelier's in-process
loader does per sample. Prints "python images_per_s=<samples/s>".
"""
import argparse
import os
import random
import time

import torch
from PIL import Image
from torch.utils.data import DataLoader, Dataset
from torchvision import transforms


class ContentStyle(Dataset):
    def __init__(self, files, load, crop):
        self.files = files
        self.transform = transforms.Compose([
            transforms.Resize(load),
            transforms.RandomCrop(crop),
            transforms.RandomHorizontalFlip(),
            transforms.ToTensor(),
            transforms.Normalize([0.5] * 3, [0.5] * 3),
        ])

    def __len__(self):
        return 1 << 30  # an endless stream, like the trainer's

    def __getitem__(self, i):
        content = self.files[i % len(self.files)]
        style = self.files[(i * 7919 + 13) % len(self.files)]
        return (self.transform(Image.open(content).convert("RGB")),
                self.transform(Image.open(style).convert("RGB")))


def main():
    p = argparse.ArgumentParser()
    p.add_argument("--images", required=True)
    p.add_argument("--crop", type=int, default=256)
    p.add_argument("--load", type=int, default=286)
    p.add_argument("--batch", type=int, default=8)
    p.add_argument("--batches", type=int, default=24)
    p.add_argument("--workers", type=int, default=2)
    args = p.parse_args()
    files = sorted(os.path.join(args.images, f) for f in os.listdir(args.images)
                   if f.endswith(".jpg") and os.path.getsize(os.path.join(args.images, f)) > 0)
    random.seed(0)
    torch.set_num_threads(1)
    loader = DataLoader(ContentStyle(files, args.load, args.crop), batch_size=args.batch,
                        num_workers=args.workers, shuffle=False, prefetch_factor=4,
                        persistent_workers=True)
    it = iter(loader)
    next(it)  # warm-up: worker start-up
    t0 = time.perf_counter()
    for _ in range(args.batches):
        next(it)
    seconds = time.perf_counter() - t0
    print(f"python images_per_s={args.batches * args.batch / seconds:.1f}")


if __name__ == "__main__":
    main()
