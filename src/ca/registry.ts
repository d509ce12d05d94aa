/**
 * Every CA backend, each in its own folder with its settings schema and factory
 * (`<folder>/config.ts`). Adding a backend is adding its folder and one line here.
 */
import { awsPcaType } from './aws-pca/config.js';
import { cfsslType } from './cfssl/config.js';
import { embeddedCaType } from './embedded/config.js';

export const CA_BACKEND_TYPES = [embeddedCaType, awsPcaType, cfsslType] as const;

export type AnyCaBackendType = (typeof CA_BACKEND_TYPES)[number];
