import type { TargetConfig } from '../../types.js';
import { modeOf } from '../config.js';
import { ephemeralProvisioner } from './ephemeral.js';
import { certificateProvisioner } from './certificate.js';
import { checkoutProvisioner } from './checkout.js';
import type { Provisioner } from './types.js';

export const provisioners: Provisioner[] = [ephemeralProvisioner, certificateProvisioner, checkoutProvisioner];

export function provisionerFor(target: TargetConfig): Provisioner {
  switch (modeOf(target)) {
    case 'ephemeral-account': return ephemeralProvisioner;
    case 'certificate': return certificateProvisioner;
    case 'checkout': return checkoutProvisioner;
    default: throw new Error(`target ${target.name}: unknown credentials.mode`);
  }
}

