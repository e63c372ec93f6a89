/**
 * Working hours on live sessions: a timer per policy's next window end on the injected clock. At
 * expiryWarningMs before it the gateway warns the policy's live sessions (onWindow 'closing'), at
 * the end it ends them ('closed'); then the timer moves on to the next window. Break-glass grants
 * are not bound by hours (the gateway leaves their sessions alone).
 */
import type { PolicyConfig, PolicyTarget } from './config.js';
import type { TimerHandle } from './clock.js';
import { nextWindowEnd } from './hours.js';
import { PolicyBreakGlass } from './breakglass.js';

export abstract class PolicyWindows<T extends PolicyTarget = PolicyTarget> extends PolicyBreakGlass<T> {
  private readonly windowTimers = new Map<string, TimerHandle[]>();

  override async start(): Promise<void> {
    await super.start();
    for (const p of this.cfg.policies) if (p.hours) this.armWindow(p);
  }

  override stop(): void {
    super.stop();
    for (const hs of this.windowTimers.values()) for (const h of hs) h.cancel();
    this.windowTimers.clear();
  }

  /** When the policy's current (or next) working-hours window closes; null: never. */
  windowEnd(policy: string, at = this.clock.now()): number | null {
    const p = this.policyByName(policy);
    return p?.hours ? nextWindowEnd(p.hours, at) : null;
  }

  private armWindow(p: PolicyConfig): void {
    for (const h of this.windowTimers.get(p.name) ?? []) h.cancel();
    const now = this.clock.now();
    const end = p.hours ? nextWindowEnd(p.hours, now) : null;
    if (!this.running || end === null) { this.windowTimers.delete(p.name); return; }
    const fire = (phase: 'closing' | 'closed') => this.hook('onWindow', () => this.onWindowFn?.({ policy: p.name, phase, closesAt: end }));
    const timers: TimerHandle[] = [];
    if (end - this.warnMs > now) timers.push(this.clock.setTimer(end - this.warnMs - now, () => { if (this.running) fire('closing'); }));
    timers.push(this.clock.setTimer(end - now, () => {
      if (!this.running) return;
      fire('closed');
      this.armWindow(p);
    }));
    this.windowTimers.set(p.name, timers);
  }
}
