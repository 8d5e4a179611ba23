import os from 'node:os';

/** This machine's Nix system name, from Node's view of the platform (no Nix call needed). */
export async function hostSystem(): Promise<string> {
  const arch = ({ x64: 'x86_64', arm64: 'aarch64', ia32: 'i686', riscv64: 'riscv64' } as Record<string, string>)[os.arch()] ?? os.arch();
  const platform = os.platform() === 'darwin' ? 'darwin' : os.platform();
  return `${arch}-${platform}`;
}
