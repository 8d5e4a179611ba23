import { describe, it } from 'node:test';
import assert from 'node:assert/strict';
import { NixCommandError, stripTerminalEscapes } from '@nixfarm/shared';

const DRV = '/nix/store/wf5nifincyjzgc9b9cr10ik3v2dh76im-failing.drv';

describe('stripTerminalEscapes', () => {
  it('removes the colours of a Nix 2.8 build error as the serve protocol reports it', () => {
    assert.equal(stripTerminalEscapes(`\x1b[0mbuilder for '\x1b[35;1m${DRV}\x1b[0m' failed with exit code 3`), `builder for '${DRV}' failed with exit code 3`);
    assert.equal(stripTerminalEscapes('\x1b[31;1merror:\x1b[0m evaluation aborted'), 'error: evaluation aborted');
  });

  it('removes bold, 256-colour and true-colour SGR sequences', () => {
    assert.equal(stripTerminalEscapes('\x1b[1mbold\x1b[22m \x1b[38;5;208morange\x1b[39m \x1b[48;2;10;20;30mbg\x1b[m'), 'bold orange bg');
  });

  it('keeps the text of OSC 8 hyperlinks and drops OSC titles, with ST or BEL as terminator', () => {
    assert.equal(stripTerminalEscapes('see \x1b]8;;https://nixos.org/manual\x1b\\the manual\x1b]8;;\x1b\\ now'), 'see the manual now');
    assert.equal(stripTerminalEscapes('\x1b]0;building hello\x07done'), 'done');
    assert.equal(stripTerminalEscapes('\x1b]8;;file:///tmp/x\x07x\x1b]8;;\x07'), 'x');
  });

  it('removes cursor moves, erases, private modes and charset choices', () => {
    assert.equal(stripTerminalEscapes('\r\x1b[2K\x1b[1G[1/3 built]\x1b[3A\x1b[10;20H\x1b[?25l\x1b[?25h\x1b(Bok\x1b=\x1b>'), '\r[1/3 built]ok');
  });

  it('removes DCS strings, the 8-bit CSI and a stray escape', () => {
    assert.equal(stripTerminalEscapes('a\x1bPq#0;2;0;0;0\x1b\\b'), 'ab');
    assert.equal(stripTerminalEscapes('\x9b31mred\x9b0m'), 'red');
    assert.equal(stripTerminalEscapes('cut off\x1b'), 'cut off');
    assert.equal(stripTerminalEscapes('title \x1b]0;never ended'), 'title ');
  });

  it('leaves plain text as it is: tabs, newlines, Unicode, and bracket text without an escape', () => {
    for (const text of ['', 'plain', 'tab\there\nnext line\r\n', 'ünïcödé → ✓ 日本', '[31m not an escape [0m', "error: builder for 'x' failed"]) {
      assert.equal(stripTerminalEscapes(text), text);
    }
  });
});

describe('NixCommandError', () => {
  it('says what Nix said without colours, and keeps its stderr as written', () => {
    const stderr = "\x1b[31;1merror:\x1b[0m undefined variable '\x1b[35;1mfoo\x1b[0m'\n";
    const error = new NixCommandError(['nix-instantiate', 'x.nix'], 1, stderr);
    assert.equal(error.message, "nix-instantiate x.nix failed with exit code 1:\nerror: undefined variable 'foo'");
    assert.equal(error.stderr, stderr);
  });
});
