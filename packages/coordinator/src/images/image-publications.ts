import type { Redis } from 'ioredis';
import { imagePublicationSchema, redisKeys, type ImagePublication } from '@nixfarm/shared';

/** Each run's image publications, in Redis (redisKeys.runImages) so that the API reads them from any coordinator process. */
export class ImagePublications {
  constructor(private readonly redis: Pick<Redis, 'hset' | 'hget' | 'hgetall' | 'hsetnx'>) {}

  /** The first word on an output; a publication already recorded (a run finalized again after a restart) keeps its own, which is returned. */
  async open(runId: string, index: number, publication: ImagePublication): Promise<ImagePublication> {
    const key = redisKeys.runImages(runId);
    if ((await this.redis.hsetnx(key, String(index), JSON.stringify(publication))) === 1) return publication;
    const raw = await this.redis.hget(key, String(index));
    return raw === null ? publication : imagePublicationSchema.parse(JSON.parse(raw));
  }

  async set(runId: string, index: number, publication: ImagePublication): Promise<void> {
    await this.redis.hset(redisKeys.runImages(runId), String(index), JSON.stringify(publication));
  }

  /** In the order of the run's outputs. */
  async list(runId: string): Promise<ImagePublication[]> {
    const all = await this.redis.hgetall(redisKeys.runImages(runId));
    return Object.entries(all)
      .sort(([a], [b]) => Number(a) - Number(b))
      .map(([, raw]) => imagePublicationSchema.parse(JSON.parse(raw)));
  }
}
