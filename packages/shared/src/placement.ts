/**
 * Nix's build-remote preference among machines that could take a build:
 * the lowest load/speedFactor first, then the higher speed factor, then the
 * lower load. (Hydra rounds the ratio; we do not.)
 */
export interface PlacementCandidate {
  name: string;
  running: number;
  maxJobs: number;
  speedFactor: number;
}

/** Negative when `a` should get the build before `b`. */
export function comparePlacement(a: PlacementCandidate, b: PlacementCandidate): number {
  const ratio = a.running / a.speedFactor - b.running / b.speedFactor;
  if (ratio !== 0) return ratio;
  if (a.speedFactor !== b.speedFactor) return b.speedFactor - a.speedFactor;
  if (a.running !== b.running) return a.running - b.running;
  return 0;
}

function hasFreeSlot(c: PlacementCandidate): boolean {
  return c.running < c.maxJobs;
}

/** The candidates with a free slot that Nix's rule ranks strictly ahead of `self`. */
export function betterPlacedThan<T extends PlacementCandidate>(self: PlacementCandidate, others: readonly T[]): T[] {
  return others.filter((o) => o.name !== self.name && hasFreeSlot(o) && comparePlacement(o, self) < 0);
}
