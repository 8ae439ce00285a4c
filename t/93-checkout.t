#!/usr/bin/perl

# CheckOut: before the check-in goes to the MDM server, the module finds
# the watches paired with the device, for $mdm_watch_paired_udids (here
# sent as X-Paired-Watches); once the MDM server accepts it, the module
# removes the device's record, marks the pairs of a phone's watches
# unpaired, and removes the pair of a watch.  A CheckOut the MDM server
# refuses, or whose Mdm-Signature does not verify, changes nothing; the
# CheckOut itself passes through as it was sent.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use MIME::Base64 qw(encode_base64);
use Test::More;
use Time::HiRes qw(sleep time);

use MdmWatch::Message qw(check_out);
use MdmWatch::Test;

my $CHECKIN = $MdmWatch::Test::CHECKIN_URI;
my $CHECKIN_TYPE = $MdmWatch::Test::CHECKIN_TYPE;

my $t = MdmWatch::Test->new->setup(checkin => ' ' x 12
    . "proxy_set_header X-Paired-Watches \$mdm_watch_paired_udids;\n");

# the default phone, enrolled by setup without identity, and two more
my $phone = $MdmWatch::Test::PHONE;
my $signed_phone = '00008110-0000000000000C02';
my $lonely_phone = '00008110-0000000000000C03';
my ($w1, $w2, $w3, $w4) = map { sprintf '00008301-0000000000000C1%d', $_ }
    1 .. 4;

# pairs a watch with a phone, from the challenge to the enrollment; the
# phone signs its GetToken as $signer
sub pair {
    my ($watch, $phone, $signer) = @_;
    my $st = $t->challenge(UDID => $watch) // die 'no challenge';
    my $token = $t->get_token(udid => $phone, security_token => $st,
        watch_udid => $watch, signer => $signer)
        // die "no pairing token for $phone";
    my $res = $t->enroll(UDID => $watch, PAIRING_TOKEN => $token);
    die "the watch $watch is not paired" unless $res->{status} == 200;
}

ok($t->enroll_phone(udid => $signed_phone, signer => 'other_phone')
    ->{recorded}, 'a second phone is recorded with its identity');
ok($t->enroll_phone(udid => $lonely_phone)->{recorded},
    'a third phone is recorded');

# the set of a phone is unordered; X-Paired-Watches is sorted
pair($w2, $phone);
pair($w1, $phone);
pair($w3, $signed_phone, 'other_phone');
pair($w4, $signed_phone, 'other_phone');
is_deeply([$t->redis_members("mdm_watch:phone:$phone")], [$w1, $w2],
    'the first phone has two watches');
is_deeply([$t->redis_members("mdm_watch:phone:$signed_phone")], [$w3, $w4],
    'the second phone has two watches');

# the watches, enrolled, are devices too
for my $w ($w1, $w3) {
    ok($t->enroll_phone(udid => $w)->{recorded},
        "the watch $w is recorded as a device");
}

# sends a CheckOut, asserts that the MDM server received it byte for
# byte, with X-Paired-Watches as given (undef: none), and that its
# answer came back; returns the answer
sub passes {
    my ($what, $udid, %o) = @_;
    my $body = check_out(udid => $udid);
    my @headers = (['Content-Type', $CHECKIN_TYPE], @{ $o{headers} // [] });
    push @headers, ['Mdm-Signature', $t->mdm_signature($body, $o{signer})]
        if defined $o{signer};
    push @headers, ['Mdm-Signature', $o{signature}] if defined $o{signature};
    push @headers, ['X-Standin-Status', $o{status}] if defined $o{status};
    my $before = $t->upstream_count;

    my $res = $t->request(method => 'PUT', uri => $CHECKIN,
        headers => \@headers, body => $body);
    is($res->{status}, $o{status} // 200,
        "$what: the device gets the status of the MDM server")
        or diag(MdmWatch::Test::describe($res));

    my @up = $t->upstream_requests;
    is(scalar @up, $before + 1, "$what: the MDM server received it once");
    is($res->{headers}{'x-standin-request'}, $up[$before]{id},
        "$what: the answer is that of the MDM server");
    $t->passed_ok($up[$before], method => 'PUT', uri => $CHECKIN,
        body => $body,
        headers => [grep { lc $_->[0] ne 'x-paired-watches' } @headers],
        name => "$what: the MDM server received it byte for byte");
    is($up[$before]{header}{'x-paired-watches'}, $o{watches},
        "$what: X-Paired-Watches is "
        . (defined $o{watches} ? $o{watches} : 'not sent, no watches'));
    return $res;
}

sub unchanged {
    my ($what, $send) = @_;
    my $before = $t->redis_snapshot;
    $send->();
    ok($t->registry_barrier, "$what: the module records again after it");
    $t->redis_unchanged_ok($before, "$what: Redis is unchanged");
}

# waits, within a bound, until the device's record is gone
sub record_gone {
    my ($what, $udid) = @_;
    my $deadline = time + MdmWatch::Test::slow(5);
    sleep 0.02 while $t->redis('EXISTS', $t->device_key($udid))
        && time < $deadline;
    is($t->redis('EXISTS', $t->device_key($udid)), 0,
        "$what: the device's record is removed");
}

my %pair = map { $_ => $t->redis_hash("mdm_watch:pair:$_") }
    $w1, $w2, $w3, $w4;

# CheckOuts that change nothing

unchanged('a CheckOut of a phone that the MDM server refuses', sub {
    passes('a CheckOut of a phone that the MDM server refuses', $phone,
        status => 500, watches => "$w1,$w2");
});
unchanged('a CheckOut of a watch that the MDM server refuses', sub {
    passes('a CheckOut of a watch that the MDM server refuses', $w3,
        status => 403, watches => undef);
});
{
    my $what = 'a CheckOut with a garbage Mdm-Signature';
    my $mark = $t->log_mark;
    unchanged($what, sub {
        passes($what, $signed_phone, watches => "$w3,$w4",
            signature => encode_base64(MdmWatch::Test::random_bytes(900),
                ''));
    });
    $t->log_like(qr/\[warn\][^\n]*signature/i,
        "$what: the error log warns about the signature", $mark);
}
for my $case (['unsigned', undef], ['signed by another device', 'phone']) {
    my ($how, $signer) = @$case;
    my $what = "a CheckOut $how, of a phone whose certificate is on record";
    my $mark = $t->log_mark;
    unchanged($what, sub {
        passes($what, $signed_phone, watches => "$w3,$w4",
            defined $signer ? (signer => $signer) : ());
    });
    $t->log_like(qr/\[warn\][^\n]*CheckOut[^\n]*not signed by the certificate/,
        "$what: the error log warns that it is not followed", $mark);
}
unchanged('a CheckOut of a device the module knows nothing of', sub {
    passes('a CheckOut of a device the module knows nothing of',
        '00008110-0000000000000CFF', watches => undef);
});

# a phone checks out

{
    my $what = 'a CheckOut of a phone';
    passes($what, $phone, watches => "$w1,$w2",
        headers => [['X-Paired-Watches', 'SPOOFED-BY-THE-CLIENT']]);
    record_gone($what, $phone);
    for my $w ($w1, $w2) {
        is_deeply($t->redis_hash("mdm_watch:pair:$w"),
            { %{ $pair{$w} }, state => 'unpaired' },
            "$what: the pair of its watch $w is marked unpaired, the rest"
            . ' as it was');
    }
    is($t->redis('EXISTS', "mdm_watch:phone:$phone"), 0,
        "$what: the set of its watches is deleted");
    is_deeply($t->redis_hash("mdm_watch:pair:$w3"), $pair{$w3},
        "$what: the watch of another phone is still paired");

    my $st = $t->challenge(UDID => $w2);
    my $res = $t->get_token_response(udid => $phone, security_token => $st,
        watch_udid => $w2);
    is($res->{status}, 403, 'the phone that checked out gets no pairing'
        . ' token');
}

# a watch checks out

{
    my $what = 'a CheckOut of a watch';
    passes($what, $w3, watches => undef);
    record_gone($what, $w3);
    is($t->redis('EXISTS', "mdm_watch:pair:$w3"), 0,
        "$what: its pair is deleted");
    is_deeply([$t->redis_members("mdm_watch:phone:$signed_phone")], [$w4],
        "$what: its phone's set holds the other watch only");
    is_deeply($t->redis_hash("mdm_watch:pair:$w4"), $pair{$w4},
        "$what: the pair of the other watch is as it was");

    $what = 'a CheckOut of an unpaired watch, its UDID in lower case';
    passes($what, lc $w1, watches => undef);
    record_gone($what, $w1);
    my $deadline = time + MdmWatch::Test::slow(5);
    sleep 0.02 while $t->redis('EXISTS', "mdm_watch:pair:$w1")
        && time < $deadline;
    is($t->redis('EXISTS', "mdm_watch:pair:$w1"), 0,
        "$what: its pair is deleted");
    is_deeply($t->redis_hash("mdm_watch:pair:$w2"),
        { %{ $pair{$w2} }, state => 'unpaired' },
        "$what: the other watch of its phone stays unpaired");
}

# a signed CheckOut, and a phone without watches

{
    my $what = 'a CheckOut of a phone, signed by the identity on record';
    passes($what, $signed_phone, watches => $w4, signer => 'other_phone');
    record_gone($what, $signed_phone);
    is($t->redis('HGET', "mdm_watch:pair:$w4", 'state'), 'unpaired',
        "$what: its watch is marked unpaired");
    is($t->redis('EXISTS', "mdm_watch:phone:$signed_phone"), 0,
        "$what: the set of its watches is deleted");

    $what = 'a CheckOut of a phone without watches';
    my $key = $t->device_key($lonely_phone);
    my $before = $t->redis_snapshot;
    passes($what, $lonely_phone, watches => undef);
    record_gone($what, $lonely_phone);
    is_deeply([MdmWatch::Test::redis_diff($before, $t->redis_snapshot)],
        ["removed $key ($before->{$key})"], "$what: nothing else changes");
}

# a phone with more watches than a header should carry

{
    my $what = 'a CheckOut of a phone with 1,500 watches';
    my $crowded = '00008110-0000000000000C04';
    ok($t->enroll_phone(udid => $crowded)->{recorded},
        'a fourth phone is recorded');
    $t->redis('EVAL', <<'LUA', 0, $crowded, 1500);
for i = 1, tonumber(ARGV[2]) do
    local w = string.format('00008301-%016X', 0xD000 + i)
    redis.call('HSET', 'mdm_watch:pair:' .. w, 'watch_udid', w,
        'phone_udid', ARGV[1], 'state', 'paired', 'paired_at', '1796400000')
    redis.call('SADD', 'mdm_watch:phone:' .. ARGV[1], w)
end
redis.call('SADD', 'mdm_watch:phone:' .. ARGV[1],
    "00008301-0000000000000D00\r\nX-Injected: yes", '',
    '00008301-00000000000000aa')
LUA
    my @watches = map { sprintf '00008301-%016X', 0xD000 + $_ } 1 .. 1500;
    my $mark = length $t->error_log;
    passes($what, $crowded, watches => join ',', @watches[0 .. 99]);
    $t->log_like(qr/\[warn\][^\n]*CheckOut of "\Q$crowded\E", paired with 1500 watches: \$mdm_watch_paired_udids names the first 100/,
        "$what: the warning says how many watches the variable leaves out",
        $mark);
    record_gone($what, $crowded);
    my $deadline = time + MdmWatch::Test::slow(5);
    sleep 0.02 while $t->redis('EXISTS', "mdm_watch:phone:$crowded")
        && time < $deadline;
    is(scalar(grep {
            $t->redis('HGET', "mdm_watch:pair:$_", 'state') eq 'unpaired'
        } @watches[0, 99, 100, 1499]), 4,
        "$what: its watches are marked unpaired, listed in the header or"
        . ' not');
    is($t->redis('EVAL', "local n = 0 for _, k in ipairs(redis.call('KEYS',"
        . " 'mdm_watch:pair:00008301-000000000000D*')) do if redis.call("
        . "'HGET', k, 'state') == 'unpaired' then n = n + 1 end end"
        . ' return n', 0), 1500, "$what: all 1,500 are");
}

$t->finish;
