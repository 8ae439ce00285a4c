#!/usr/bin/perl

# The demo's phone and watch (demo/simulator.pl) go through the whole
# pairing against nginx with the README's configuration: the phone, new
# to the module, checks in signed and is learned, then the watch pairs.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;

use MdmWatch::Test;

my $simulator = "$MdmWatch::Test::ROOT/demo/simulator.pl";
plan skip_all => 'no demo/simulator.pl' unless -f $simulator;

my $t = MdmWatch::Test->new->setup(phone => 0);
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
    [qr/^\[1\].*Authenticate.*200 from the MDM server/m,
        'step 1: the phone authenticates'],
    [qr/^\[2\].*TokenUpdate.*200 from the MDM server/m,
        'step 2: the phone sends its TokenUpdate'],
    [qr/^\[3\].*\Q$phone\E.*phone learned.*mdm-signature/m,
        'step 3: Redis shows the phone learned, with its identity'],
    [qr/^\[4\].*403 challenge/m, 'step 4: the watch is challenged'],
    [qr/^\[5\].*200 TokenData/m, 'step 5: the phone gets TokenData'],
    [qr/^\[6\].*200 profile/m, 'step 6: the watch gets the profile'],
    [qr/^\[7\].*\Q$watch\E/m, 'step 7: Redis shows the pair'],
    [qr/^\[8\].*403 challenge again/m,
        'step 8: the pairing token cannot be used twice'],
    [qr/^all steps passed/m, 'the simulator reports success'],
);
ok($text =~ $_->[0], $_->[1]) for @steps;

my @up = $t->upstream_requests;
is_deeply([map { $_->{uri} } @up],
    [('/mdm/checkin') x 2, '/mdm/enroll/watch'],
    'the MDM server received the two check-ins and the one enrollment');
for my $i (0, 1) {
    my $type = (qw(Authenticate TokenUpdate))[$i];
    like($up[$i]{body} // '', qr{<key>MessageType</key>\s*<string>$type<},
        "the MDM server received the $type of the phone");
    ok(length($up[$i]{header}{'mdm-signature'} // ''),
        "the $type reached the MDM server with its Mdm-Signature");
}
is($up[2]{header}{'x-paired-phone-udid'}, $phone,
    'the MDM server learned the phone of the watch');
my $device = $t->device_record($phone);
is($device->{identity}, $t->pki->identity('phone'),
    'Redis holds the phone with the identity of its signature');
is($device->{identity_source}, 'mdm-signature',
    '... learned from Mdm-Signature');
is($t->redis('HGET', "mdm_watch:pair:$watch", 'phone_udid'), $phone,
    'Redis holds the pair');

$t->finish;
