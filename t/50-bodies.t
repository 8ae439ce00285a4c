#!/usr/bin/perl

# Request bodies however they come: larger than client_body_buffer_size,
# so that nginx keeps them in a temporary file; chunked; slowly, in
# pieces; cut off by a client that goes away; larger than
# client_max_body_size.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;
use Time::HiRes qw(sleep);

use MdmWatch::Message qw(checkin get_token token_update parse_token_data);
use MdmWatch::Test;

my $t = MdmWatch::Test->new->setup(
    http => "    client_body_buffer_size 1k;\n    client_max_body_size 1m;\n");
my $watch = $t->pki->udid;
my $phone = '00008110-000A1B2C3D4E5F60';
my $padding = 'p' x 200_000;
my $spooled = qr/a client request body is buffered to a temporary file/;

sub pairing_token {
    my ($udid, %o) = @_;
    my $st = $t->challenge(UDID => $udid);
    return $t->get_token(udid => $phone, security_token => $st // '',
        watch_udid => $udid, %o);
}

sub enrolled {
    my ($what, $body, %o) = @_;
    my $before = $t->upstream_count;
    my $res = $t->enroll(body => $body, %o);
    is($res->{status}, 200, "$what is enrolled")
        or diag(MdmWatch::Test::describe($res));
    my @up = $t->upstream_requests;
    is(scalar @up, $before + 1, "$what: the MDM server received one request");
    $t->passed_ok($up[$before], method => 'POST', body => $body,
        name => "$what: the MDM server received the body byte for byte");
}

sub passed {
    my ($what, $body, %o) = @_;
    my $before = $t->upstream_count;
    my $res = $t->checkin($body, %o);
    is($res->{status}, 200, "$what is answered by the MDM server")
        or diag(MdmWatch::Test::describe($res));
    my @up = $t->upstream_requests;
    is(scalar @up, $before + 1, "$what: the MDM server received it once");
    $t->passed_ok($up[$before], method => 'PUT', body => $body,
        name => "$what: the MDM server received the body byte for byte");
}

# bodies in a temporary file

my $mark = $t->log_mark;
my $res = $t->enroll(UDID => $watch, PADDING => $padding);
$t->challenge_ok($res, 'machine info of 200 KB is challenged');
$t->log_like($spooled, 'nginx kept the machine info in a temporary file',
    $mark);

my $token = pairing_token($watch);
ok(defined $token, 'the phone gets a pairing token');
enrolled('machine info of 200 KB with a pairing token',
    $t->machine_info_body(UDID => $watch, PADDING => $padding,
        PAIRING_TOKEN => $token // ''));

$mark = $t->log_mark;
my $st = $t->challenge(UDID => $watch);
my $big_get_token = get_token(udid => $phone, security_token => $st // '',
    watch_udid => $watch);
my $pad = "\t<key>Padding</key>\n\t<string>" . ('q' x 4000) . "</string>\n";
$big_get_token =~ s{</dict>\n</plist>}{$pad</dict>\n</plist>}
    or die 'no end of dictionary in the GetToken';
$res = $t->checkin($big_get_token);
is($res->{status}, 200, 'a GetToken of 4 KB is answered 200');
ok(length(parse_token_data($res->{body}) // ''), 'it carries TokenData');
$t->log_like($spooled, 'nginx kept the GetToken in a temporary file', $mark);

passed('a TokenUpdate of 300 KB',
    token_update(udid => $watch,
        token => MdmWatch::Test::random_bytes(300_000)));

# chunked bodies

$res = $t->enroll(UDID => $watch, chunked => 1, chunk_size => 100);
$t->challenge_ok($res, 'chunked machine info is challenged');

$token = pairing_token($watch);
enrolled('chunked machine info with a pairing token',
    $t->machine_info_body(UDID => $watch, PAIRING_TOKEN => $token // ''),
    chunked => 1, chunk_size => 100);

$token = pairing_token($watch);
enrolled('chunked machine info of 200 KB with a pairing token',
    $t->machine_info_body(UDID => $watch, PADDING => $padding,
        PAIRING_TOKEN => $token // ''),
    chunked => 1, chunk_size => 8000);

$st = $t->challenge(UDID => $watch);
$res = $t->get_token_response(udid => $phone, security_token => $st // '',
    watch_udid => $watch, chunked => 1, chunk_size => 50);
is($res->{status}, 200, 'a chunked GetToken is answered 200');
ok(length(parse_token_data($res->{body}) // ''), 'it carries TokenData');

passed('a chunked TokenUpdate', token_update(udid => $watch),
    chunked => 1, chunk_size => 64);
passed('a chunked TokenUpdate of 300 KB',
    token_update(udid => $watch,
        token => MdmWatch::Test::random_bytes(300_000)),
    chunked => 1, chunk_size => 16384);

# bodies that come slowly

$res = $t->enroll(UDID => $watch, delay => 0.1, chunk_size => 300);
$t->challenge_ok($res, 'machine info sent in pieces, slowly, is challenged');

$st = $t->challenge(UDID => $watch);
$res = $t->get_token_response(udid => $phone, security_token => $st // '',
    watch_udid => $watch, chunked => 1, chunk_size => 200, delay => 0.1);
is($res->{status}, 200, 'a GetToken sent slowly in chunks is answered 200');

passed('a TokenUpdate sent in pieces, slowly', token_update(udid => $watch),
    delay => 0.1, chunk_size => 256);

# bodies after 100 Continue, and from HTTP/1.0 clients

$res = $t->enroll(UDID => $watch, headers => [['Expect', '100-continue']]);
$t->challenge_ok($res, 'machine info sent after Expect: 100-continue is'
    . ' challenged');
like($res->{raw}, qr{^HTTP/1\.1 100 Continue\r\n}, 'nginx said 100 Continue');

my $mi = $t->machine_info_body(UDID => $watch);
$res = $t->raw_request("POST $MdmWatch::Test::ENROLL_URI HTTP/1.0\r\n"
    . "Content-Type: $MdmWatch::Test::CMS_TYPE\r\n"
    . 'Content-Length: ' . length($mi) . "\r\n\r\n" . $mi);
$t->challenge_ok($res, 'machine info from an HTTP/1.0 client without Host'
    . ' is challenged');

# clients that go away

my %cut = (
    $MdmWatch::Test::ENROLL_URI => [$MdmWatch::Test::CMS_TYPE,
        $t->machine_info_body(UDID => $watch)],
    $MdmWatch::Test::CHECKIN_URI => [$MdmWatch::Test::CHECKIN_TYPE,
        get_token(udid => $phone, security_token => $t->challenge // '',
            watch_udid => $watch)],
);
for my $where (sort keys %cut) {
    my ($type, $body) = @{ $cut{$where} };
    my $before = $t->upstream_count;
    my $h = $t->send_raw(["PUT $where HTTP/1.1\r\n"
        . "Host: 127.0.0.1\r\nContent-Type: $type\r\n"
        . 'Content-Length: ' . (length($body) + 1000) . "\r\n\r\n"
        . $body]);
    sleep 0.2;
    close $h->{sock};
    sleep 0.2;
    is($t->upstream_count, $before,
        "a body cut off at $where reaches nothing");
}
$res = $t->enroll(UDID => $watch);
$t->challenge_ok($res, 'after clients went away, the next watch is served');

# bodies too large

my $before = $t->upstream_count;
$res = $t->enroll(body => 'x' x (1024 * 1024 + 1));
is($res->{status}, 413, 'a body over client_max_body_size is answered 413');
is($t->upstream_count, $before, 'the body over the limit reaches nothing');

$t->finish;
