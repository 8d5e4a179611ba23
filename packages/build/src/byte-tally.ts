/** Adds up the bytes a build's copies stream (Nix's export format: each path's NAR plus a little metadata). */
export interface ByteTally {
  bytes: number;
}
