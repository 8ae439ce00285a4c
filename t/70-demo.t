#!/usr/bin/perl

# The demo's phone and watch (demo/simulator.pl) go through the whole
# pairing against nginx with the README's configuration.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;

use MdmWatch::Test;

my $simulator = "$MdmWatch::Test::ROOT/demo/simulator.pl";
plan skip_all => 'no demo/simulator.pl' unless -f $simulator;

my $t = MdmWatch::Test->new->setup;
my $watch = '00008301-0A1B2C3D4E5F6071';
my $phone = '00008110-000A1B2C3D4E5F60';
my $out = $t->dir . '/simulator.out';

$t->spawn('simulator', $out, $^X, $simulator,
    '--nginx', '127.0.0.1:' . $t->port('nginx'),
    '--redis', '127.0.0.1:' . $t->port('redis'),
    '--pki', $t->pki->dir, '--watch', $watch, '--phone', $phone);

my $status = $t->reap('simulator', 60);
if (!defined $status) {
    $t->stop_process('simulator');
    fail('the simulator finishes within 60 seconds');
}
my $code = !defined $status ? 'none'
         : $status & 127   ? 'signal ' . ($status & 127)
         :                   $status >> 8;
my $text = MdmWatch::Test::slurp($out);

is($code, 0, 'the simulator exits 0: every step passed') or diag($text);
my @steps = (
    [qr/^\[1\].*403 challenge/m, 'step 1: the watch is challenged'],
    [qr/^\[2\].*200 TokenData/m, 'step 2: the phone gets TokenData'],
    [qr/^\[3\].*200 profile/m, 'step 3: the watch gets the profile'],
    [qr/^\[4\].*\Q$watch\E/m, 'step 4: Redis shows the pair'],
    [qr/^\[5\].*403 challenge again/m,
        'step 5: the pairing token cannot be used twice'],
    [qr/^all steps passed/m, 'the simulator reports success'],
);
ok($text =~ $_->[0], $_->[1]) for @steps;

my @up = $t->upstream_requests;
is(scalar @up, 1, 'the MDM server received the one enrollment');
is($up[0]{header}{'x-paired-phone-udid'}, $phone,
    'the MDM server learned the phone of the watch');
is($t->redis('HGET', "mdm_watch:pair:$watch", 'phone_udid'), $phone,
    'Redis holds the pair');

$t->finish;
