#!/usr/bin/perl

# The enrollment location: which requests it refuses and how, and the
# 403 challenge that asks a watch for a pairing token.  What a valid
# pairing token does is in 30-flow.t.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use File::Temp qw(tempdir);
use JSON::PP;
use Test::More;

use MdmWatch::Message qw(machine_info sign plist);
use MdmWatch::Test;

my $t = MdmWatch::Test->new->setup;
my $pki = $t->pki;
my $watch = $pki->udid;

# what every refused request leaves behind: nothing

sub nothing_happened {
    my ($what, $upstream_before) = @_;
    is($t->upstream_count, $upstream_before,
        "$what: nothing reached the MDM server");
    is_deeply([$t->redis_keys('mdm_watch:*')], [],
        "$what: Redis holds nothing");
}

sub refused {
    my ($what, $status, %o) = @_;
    $t->redis('FLUSHALL');
    my $before = $t->upstream_count;

    my $res = $t->enroll(%o);
    is($res->{status}, $status, "$what is answered $status")
        or diag(MdmWatch::Test::describe($res));
    ok(!defined MdmWatch::Test::challenge_token($res)
        && $res->{body} !~ /security-token/,
        "$what gets no security token");
    nothing_happened($what, $before);
    return $res;
}

sub signed {
    my ($content, %o) = @_;
    return sign($content, pki => $pki, signer => 'watch', %o);
}

# methods

for my $method (qw(GET DELETE PATCH)) {
    refused("a $method to the enrollment location", 405, method => $method,
        body => $method eq 'GET' ? undef : signed(machine_info()));
}

# bodies that are no CMS SignedData with content

refused('an empty body', 400, body => '');
refused('a body of plain text', 400, body => "hello, nginx\n");
refused('unsigned machine info', 400, body => machine_info());
refused('random bytes that start like DER', 400,
    body => "\x30\x82\x01\x00" . MdmWatch::Test::random_bytes(256));

my $der = signed(machine_info(UDID => $watch));
refused('CMS cut in half', 400, body => substr($der, 0, length($der) / 2));

my $tmp = tempdir(CLEANUP => 1);
MdmWatch::Test::spew("$tmp/content", machine_info(UDID => $watch));
MdmWatch::Pki::run('openssl', 'cms', '-sign', '-binary', '-outform', 'DER',
    '-signer', $pki->cert('watch'), '-inkey', $pki->key('watch'),
    '-in', "$tmp/content", '-out', "$tmp/detached");
refused('a detached signature without the machine info', 400,
    body => MdmWatch::Test::slurp("$tmp/detached"));

# signatures that do not verify or signers that are not trusted

sub not_trusted {
    my ($what, %o) = @_;
    my $res = refused($what, 403, %o);
    unlike($res->{headers}{'content-type'} // '', qr{application/json},
        "$what: the refusal is no JSON challenge");
}

not_trusted('machine info signed under an untrusted CA',
    signer => 'rogue_watch', UDID => $watch);
not_trusted('self-signed machine info', signer => 'self_signed');
not_trusted('machine info signed with an expired certificate',
    signer => 'expired');
not_trusted('machine info signed without the signer certificate',
    body => signed(machine_info(), nocerts => 1));
not_trusted('machine info signed under a sub CA that the CMS leaves out',
    signer => 'chained_watch');

(my $tampered = $der) =~ s/WTCHSERIAL01/WTCHSERIAL02/
    or die 'the serial number is not in the CMS';
not_trusted('machine info changed after it was signed', body => $tampered);

# machine info that is no plist or has no UDID

refused('signed text that is no plist', 400,
    body => signed("this is no property list\n"));
refused('a signed plist cut short', 400,
    body => signed(substr(machine_info(), 0, 200)));
refused('a signed plist that is an array', 400,
    body => signed(qq{<?xml version="1.0" encoding="UTF-8"?>\n}
        . qq{<plist version="1.0"><array><string>$watch</string>}
        . qq{</array></plist>\n}));
refused('machine info without UDID', 400, UDID => undef);
refused('machine info with an empty UDID', 400, UDID => '');
refused('machine info whose UDID is an integer', 400, UDID => \\42);

# the challenge

sub challenged {
    my ($what, %o) = @_;
    $t->redis('FLUSHALL');
    my $before = $t->upstream_count;
    my $udid = uc($o{UDID} // $watch);

    my $res = $t->enroll(%o);
    my $st = $t->challenge_ok($res, "$what is answered with a challenge");
    is($t->upstream_count, $before, "$what: nothing reached the MDM server");
    is_deeply([$t->redis_keys('mdm_watch:*')],
        ["mdm_watch:challenges:$udid",
         "mdm_watch:security_token:" . ($st // '?')],
        "$what: Redis holds the security token, the watch's list of "
        . "security tokens, and nothing else");
    is($t->redis('GET', "mdm_watch:security_token:" . ($st // '?')), $udid,
        "$what: the security token belongs to the watch, in upper case");
    is_deeply($t->redis('LRANGE', "mdm_watch:challenges:$udid", 0, -1),
        [$st // '?'], "$what: the watch's list holds the security token");
    return ($st, $res);
}

my ($st, $res) = challenged('machine info without a pairing token');
my $ttl = $t->redis_ttl("mdm_watch:security_token:" . ($st // '?'));
ok($ttl > 590 && $ttl <= 600,
    'the security token lives as long as mdm_watch_token_ttl (10m)')
    or diag("TTL $ttl");
my $json = JSON::PP->new->decode($res->{body});
is_deeply([sort keys %{ $json->{details} }], ['security-token'],
    'the challenge details hold the security token');
ok(!exists $json->{description} || !ref $json->{description},
    'a description, if any, is text');

my $first = $st;
$t->redis('FLUSHALL');
my $second = $t->challenge(UDID => $watch);
ok(defined $second && defined $first && $second ne $first,
    'every challenge carries a new security token');

challenged('machine info in BER with indefinite lengths', form => 'ber');
challenged('machine info as a binary plist', binary => 1);
challenged('machine info sent with PUT', method => 'PUT');
challenged('machine info with a lower-case UDID',
    UDID => lc '00008301-0A1B2C3D4E5F60AB');
challenged('machine info signed under a sub CA that the CMS carries',
    body => signed(machine_info(), signer => 'chained_watch',
        certs => [$pki->cert('intermediate')]));
challenged('machine info with only the required keys', LANGUAGE => undef);

# pairing tokens that are no pairing tokens

sub forged {
    my ($what, $token, @keep) = @_;
    my $before = $t->upstream_count;
    my @keys_before = $t->redis_keys('mdm_watch:*');
    my $mark = $t->log_mark;

    my $res = $t->enroll(UDID => $watch, PAIRING_TOKEN => $token);
    my $st = $t->challenge_ok($res,
        "$what is answered with a new challenge");
    is($t->upstream_count, $before, "$what: nothing reached the MDM server");
    my %after = map { $_ => 1 } @keys_before,
        'mdm_watch:security_token:' . ($st // '?'),
        "mdm_watch:challenges:$watch";
    is_deeply([$t->redis_keys('mdm_watch:*')], [sort keys %after],
        "$what: Redis gains the new security token and nothing else");
    $t->log_like(qr/\[warn\][^\n]*pairing token/i,
        "$what: the error log warns about the pairing token", $mark);
}

$t->redis('FLUSHALL');
forged('random bytes as pairing token', MdmWatch::Test::random_bytes(64));
forged('an empty pairing token', '');
forged('a pairing token of 4 KB, far longer than any real one',
    'A' x 4096);

$t->flush_redis;
$st = $t->challenge(UDID => $watch);
my $token = $t->get_token(udid => '00008110-000A1B2C3D4E5F60',
    security_token => $st, watch_udid => $watch);

SKIP: {
    ok(defined $token && length $token > 8,
        'the phone gets a real pairing token for the watch')
        or skip('no pairing token to change', 1);

    # the first and a middle byte carry meaning in any encoding
    for my $i (0, length($token) >> 1) {
        my $bad = $token;
        substr($bad, $i, 1) = chr(ord(substr $bad, $i, 1) ^ 0x01);
        forged("a pairing token with byte $i changed", $bad);
    }
    forged('a pairing token without its last 4 bytes', substr($token, 0, -4));
    forged('a pairing token with 4 bytes added', $token . 'AAAA');

    is(scalar(() = $t->redis_keys('mdm_watch:pairing_token:*')), 1,
        'the real pairing token is still there, unused');
}

$t->finish;
