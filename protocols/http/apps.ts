/** The app registry: the gateway's http targets by app host label and by target name. */
import type { ProtocolContext } from '../types.js';
import { appConfig, type AppConfig } from './config.js';

export class AppRegistry {
  private labels = new Map<string, AppConfig>();
  private names = new Map<string, AppConfig>();
  private seenTargets: unknown[] = [];
  /** App maps, rebuilt when the gateway's target list changes (the demo adds targets after start-up). */
  get byLabel(): Map<string, AppConfig> { this.refreshApps(); return this.labels; }
  get byName(): Map<string, AppConfig> { this.refreshApps(); return this.names; }
  private refreshApps(): void {
    const all = this.ctx.config.targets();
    if (all.length === this.seenTargets.length && all.every((t, i) => t === this.seenTargets[i])) return;
    this.seenTargets = [...all];
    this.labels = new Map();
    this.names = new Map();
    for (const t of all) {
      if (t.protocol !== 'http') continue;
      const a = appConfig(t);
      this.labels.set(a.label, a);
      this.names.set(t.name, a);
    }
  }

  constructor(private ctx: { config: Pick<ProtocolContext['config'], 'targets'> }) {
    this.refreshApps();
  }
}
