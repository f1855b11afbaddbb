/** Builds image archives in memory for import tests: layers, docker-save and OCI layouts, honest or crafted. */
import { createHash } from 'node:crypto';
import { gzipSync } from 'node:zlib';
import tar from 'tar-stream';

export type Member = Partial<tar.Header> & { name: string; data?: string | Buffer };

/** A tar stream of exactly these members, in this order (names are not checked: tests craft bad ones). */
export async function makeTar(members: readonly Member[]): Promise<Buffer> {
  const pack = tar.pack();
  const chunks: Buffer[] = [];
  const done = (async () => {
    for await (const c of pack as AsyncIterable<Buffer>) chunks.push(c);
  })();
  for (const m of members) {
    const { data, ...header } = m;
    const body = Buffer.from(data ?? '');
    const h: tar.Header = {
      mode: header.type === 'directory' ? 0o755 : 0o644,
      uid: process.getuid?.() ?? 0,
      gid: process.getgid?.() ?? 0,
      mtime: new Date(1_700_000_000_000),
      type: 'file',
      ...header,
    } as tar.Header;
    await new Promise<void>((resolve, reject) => {
      pack.entry(h, body, (err) => (err ? reject(err) : resolve()));
    });
  }
  pack.finalize();
  await done;
  return Buffer.concat(chunks);
}

export function sha(alg: 'sha256' | 'sha512', b: Buffer | string): string {
  return createHash(alg).update(b).digest('hex');
}

/**
 * A `docker save` tarball (pre-25 layout: `<id>/layer.tar`, `<config sha256>.json`) whose config
 * lists each layer's diff id (or `diffIds`); `extra` members are added to the archive.
 */
export async function dockerSave(layers: readonly Buffer[], opts: { extra?: Member[]; diffIds?: string[] } = {}): Promise<Buffer> {
  const diffIds = opts.diffIds ?? layers.map((l) => `sha256:${sha('sha256', l)}`);
  const config = JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: diffIds } });
  const configName = `${sha('sha256', config)}.json`;
  const layerNames = layers.map((_, i) => `${sha('sha256', `layer${i}`)}/layer.tar`);
  const manifest = JSON.stringify([{ Config: configName, RepoTags: ['crab/test:1'], Layers: layerNames }]);
  return makeTar([
    ...layers.map((l, i) => ({ name: layerNames[i]!, data: l })),
    { name: configName, data: config },
    ...(opts.extra ?? []),
    { name: 'manifest.json', data: manifest },
  ]);
}

/**
 * An OCI image layout tarball with gzip layers, every blob named by `alg`. `layerDigest` replaces
 * a layer's stated digest; `corruptLayer` changes a layer blob's bytes but not its name.
 */
export async function ociLayout(
  layers: readonly Buffer[],
  opts: { alg?: 'sha256' | 'sha512'; layerDigest?: (i: number, honest: string) => string; corruptLayer?: number } = {},
): Promise<Buffer> {
  const alg = opts.alg ?? 'sha256';
  const blobs: Member[] = [];
  const blob = (b: Buffer | string): string => {
    const hex = sha(alg, b);
    blobs.push({ name: `blobs/${alg}/${hex}`, data: b });
    return `${alg}:${hex}`;
  };
  const gz = layers.map((l) => gzipSync(l));
  const config = JSON.stringify({ architecture: 'amd64', os: 'linux', rootfs: { type: 'layers', diff_ids: layers.map((l) => `${alg}:${sha(alg, l)}`) } });
  const manifest = JSON.stringify({
    schemaVersion: 2,
    mediaType: 'application/vnd.oci.image.manifest.v1+json',
    config: { mediaType: 'application/vnd.oci.image.config.v1+json', digest: blob(config), size: config.length },
    layers: gz.map((g, i) => {
      const honest = blob(g);
      return { mediaType: 'application/vnd.oci.image.layer.v1.tar+gzip', digest: opts.layerDigest?.(i, honest) ?? honest, size: g.length };
    }),
  });
  if (opts.corruptLayer !== undefined) {
    // the blob keeps its name (its digest), its bytes change: a damaged or swapped layer
    const hex = sha(alg, gz[opts.corruptLayer]!);
    const b = blobs.find((m) => m.name === `blobs/${alg}/${hex}`)!;
    b.data = gzipSync(Buffer.concat([layers[opts.corruptLayer]!, Buffer.alloc(512)]));
  }
  const index = JSON.stringify({ schemaVersion: 2, manifests: [{ mediaType: 'application/vnd.oci.image.manifest.v1+json', digest: blob(manifest), platform: { architecture: 'amd64', os: 'linux' } }] });
  return makeTar([{ name: 'oci-layout', data: '{"imageLayoutVersion":"1.0.0"}' }, ...blobs, { name: 'index.json', data: index }]);
}
