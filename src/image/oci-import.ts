/**
 * @module Imports a `docker save` tarball or an OCI image layout tarball into one rootfs: finds
 * the layers through manifest.json or index.json, verifies every blob and layer against its
 * digest (sha256 or sha512 only), and applies the layers bottom first with their whiteouts
 * (`layer-unpack.ts`, which never writes outside the rootfs).
 *
 * A digest makes the archive self-consistent (nothing damaged, nothing swapped between the
 * manifest and the bytes); it does not say who made the image.
 */
import fs from 'node:fs';
import { CrabError, invalid } from '../core/errors.js';
import { ArchiveIndex, digestMismatch, verifyMember } from './archive.js';
import { parseDigest, pickManifest, type ParsedDigest, type PlatformDescriptor } from './import-policy.js';
import { unpackLayer } from './layer-unpack.js';

/** One layer to apply, with what it was (or will be) verified against. */
export interface LayerPlan {
  /** The layer's name in the archive (for messages). */
  name: string;
  file: string;
  /** Its blob digest, already checked against the stored bytes; null when the archive names it by path only. */
  blobDigest: ParsedDigest | null;
  /** The config's `rootfs.diff_ids` entry: checked against the uncompressed stream while it is applied. */
  diffId: ParsedDigest | null;
}

export interface ImportReport {
  layers: number;
  members: number;
  /** Device nodes left out (`layer-unpack.ts` says why). */
  skippedDevices: string[];
}

/** Reads `archive`, verifies it, and applies its layers to `rootfs`. On failure the caller removes `rootfs` and `unpackDir`. */
export async function importOciArchive(
  archive: string,
  rootfs: string,
  unpackDir: string,
  progress: (m: string) => void,
): Promise<ImportReport> {
  if (!fs.existsSync(archive)) throw invalid('IMAGE_ARCHIVE_NOT_FOUND', `no such file: ${archive}`);
  const index = await ArchiveIndex.read(archive, unpackDir);
  const layers = await planLayers(index);
  const report: ImportReport = { layers: layers.length, members: 0, skippedDevices: [] };
  for (const [i, layer] of layers.entries()) {
    progress(`layer ${i + 1}/${layers.length}`);
    const r = await unpackLayer(layer.file, rootfs, { diffAlgorithm: layer.diffId?.algorithm });
    if (layer.diffId && r.diffHex !== layer.diffId.hex) {
      throw digestMismatch(
        `layer ${i + 1} (${layer.name}) uncompressed`,
        `${layer.diffId.algorithm}:${layer.diffId.hex}`,
        `${layer.diffId.algorithm}:${r.diffHex}`,
      );
    }
    report.members += r.members;
    report.skippedDevices.push(...r.skippedDevices);
  }
  if (report.skippedDevices.length) {
    const shown = report.skippedDevices.slice(0, 5).join(', ');
    progress(
      `skipped ${report.skippedDevices.length} device node(s) (${shown}${report.skippedDevices.length > 5 ? ', …' : ''}): a sandbox's /dev comes from its runtime`,
    );
  }
  return report;
}

/** The layers of the archive, bottom first, each verified by its blob digest or to be verified by its diff id. */
export async function planLayers(index: ArchiveIndex): Promise<LayerPlan[]> {
  let plans: LayerPlan[];
  if (index.has('manifest.json')) plans = await dockerLayers(index);
  else if (index.has('index.json')) plans = await ociLayers(index);
  else {
    throw invalid(
      'IMAGE_ARCHIVE_INVALID',
      'the archive is neither a docker-save tarball (manifest.json) nor an OCI image layout (index.json)',
      'Create it with `docker save IMAGE -o file.tar` or `skopeo copy … oci-archive:file.tar`.',
    );
  }
  if (plans.length === 0) throw invalid('IMAGE_ARCHIVE_INVALID', 'the image has no layers');
  for (const [i, p] of plans.entries()) {
    if (!p.blobDigest && !p.diffId) {
      throw new CrabError(
        'IMAGE_DIGEST_MISSING',
        'invalid',
        `layer ${i + 1} (${p.name}) has no digest to verify it against (no blob digest, no diff_id in the image config)`,
        'Export the image with docker save or skopeo: their archives name every layer by digest.',
        { layer: p.name },
      );
    }
  }
  return plans;
}

/** `blobs/<alg>/<hex>` (docker save since 25 and OCI) or `<hex>.json` (older docker save): the digest the name states. */
function digestOfName(name: string): ParsedDigest | null {
  const blob = /^(?:\.\/)?blobs\/([a-z0-9]+)\/([0-9a-f]+)$/.exec(name);
  if (blob) return parseDigest(`${blob[1]}:${blob[2]}`);
  const legacy = /^(?:\.\/)?([0-9a-f]{64})\.json$/.exec(name);
  return legacy ? parseDigest(`sha256:${legacy[1]}`) : null;
}

async function dockerLayers(index: ArchiveIndex): Promise<LayerPlan[]> {
  const m = await index.json<unknown>('manifest.json', 'manifest');
  const first = Array.isArray(m) ? (m[0] as { Layers?: unknown; Config?: unknown } | undefined) : undefined;
  if (
    !first ||
    !Array.isArray(first.Layers) ||
    !first.Layers.every((l): l is string => typeof l === 'string')
  ) {
    throw invalid('IMAGE_ARCHIVE_INVALID', 'manifest.json has no Layers list');
  }
  let diffIds: ParsedDigest[] | null = null;
  if (typeof first.Config === 'string' && index.has(first.Config)) {
    const named = digestOfName(first.Config);
    if (named)
      await verifyMember(
        index.require(first.Config, 'config'),
        named.algorithm,
        named.hex,
        `config ${first.Config}`,
      );
    diffIds = configDiffIds(await index.json(first.Config, 'config'), first.Layers.length);
  }
  const plans: LayerPlan[] = [];
  for (const [i, name] of first.Layers.entries()) {
    const member = index.require(name, 'layer');
    const blobDigest = digestOfName(name);
    if (blobDigest) await verifyMember(member, blobDigest.algorithm, blobDigest.hex, `layer ${name}`);
    plans.push({ name, file: member.file, blobDigest, diffId: diffIds?.[i] ?? null });
  }
  return plans;
}

async function ociLayers(index: ArchiveIndex): Promise<LayerPlan[]> {
  let doc = await index.json<{ manifests?: unknown; layers?: unknown; config?: unknown }>(
    'index.json',
    'index',
  );
  if (typeof doc !== 'object' || doc === null)
    throw invalid('IMAGE_ARCHIVE_INVALID', 'index.json is not a JSON object');
  for (let depth = 0; depth < 4; depth++) {
    if (Array.isArray(doc.layers)) {
      const layers = doc.layers as Array<{ digest?: unknown }>;
      let diffIds: ParsedDigest[] | null = null;
      const config = doc.config as { digest?: unknown } | undefined;
      if (config && typeof config.digest === 'string') {
        diffIds = configDiffIds(await index.jsonBlob(config.digest, 'config'), layers.length);
      }
      const plans: LayerPlan[] = [];
      for (const [i, l] of layers.entries()) {
        const digest = parseDigest(l?.digest);
        const member = await index.blob(`${digest.algorithm}:${digest.hex}`, `layer ${i + 1}`);
        plans.push({
          name: `${digest.algorithm}:${digest.hex}`,
          file: member.file,
          blobDigest: digest,
          diffId: diffIds?.[i] ?? null,
        });
      }
      return plans;
    }
    if (!Array.isArray(doc.manifests)) break;
    const desc = pickManifest(doc.manifests as PlatformDescriptor[]);
    if (!desc) break;
    doc = await index.jsonBlob<typeof doc>(desc.digest, 'manifest');
  }
  throw invalid('IMAGE_ARCHIVE_INVALID', 'index.json leads to no image manifest with layers');
}

/** The config's `rootfs.diff_ids`, when it lists one per layer (else null: layers are then verified by blob digest alone). */
function configDiffIds(config: unknown, layers: number): ParsedDigest[] | null {
  const ids = (config as { rootfs?: { diff_ids?: unknown } } | null)?.rootfs?.diff_ids;
  if (!Array.isArray(ids) || ids.length !== layers) return null;
  return ids.map((d) => parseDigest(d));
}
