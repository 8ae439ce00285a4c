#!/usr/bin/perl

# The check-in location answers the phone's GetToken for the service
# com.apple.watch.pairing itself: a pairing token for a known security
# token, 400 for a malformed request, 403 for a security token that does
# not fit.  Check-ins it passes on are in 40-pass-through.t.  The phone
# is one the module has recorded as enrolled (setup enrolls it, and
# flush_redis again after FLUSHALL); the phones it does not know, and
# Mdm-Signature, are in 91-get-token-trust.t.

use strict;
use warnings;

use FindBin;
use lib "$FindBin::Bin/lib";

use Test::More;

use MdmWatch::Message qw(checkin get_token parse_token_data);
use MdmWatch::Test;

my $t = MdmWatch::Test->new->setup;
my $watch = $t->pki->udid;
my $other_watch = $t->pki->other_udid;
my $phone = '00008110-000A1B2C3D4E5F60';

sub security_token {
    my ($udid) = @_;
    my $st = $t->challenge(UDID => $udid // $watch);
    die 'the enrollment location gave no security token' unless $st;
    return $st;
}

sub st_key { 'mdm_watch:security_token:' . $_[0] }

sub pairing_keys { $t->redis_keys('mdm_watch:pairing_token:*') }

# a valid GetToken

$t->flush_redis;
my $st = security_token();
my $before = $t->upstream_count;

my $res = $t->get_token_response(udid => $phone, security_token => $st,
    watch_udid => $watch);
is($res->{status}, 200, 'a valid GetToken is answered 200')
    or diag(MdmWatch::Test::describe($res));
like($res->{headers}{'content-type'} // '', qr{^application/xml\b},
    'the answer is application/xml');
like($res->{body}, qr{^<\?xml[^>]*\?>\s*(?:<!DOCTYPE[^>]*>\s*)?<plist\b}s,
    'the answer is an XML plist');
my $token = parse_token_data($res->{body});
ok(defined $token && length $token, 'the plist holds TokenData');
unlike($res->{body}, qr/<key>(?!TokenData<)/,
    'TokenData is the only key of the plist');
ok(!exists $res->{headers}{'x-standin-request'},
    'the answer comes from nginx, not from the MDM server');
is($t->upstream_count, $before, 'nothing reached the MDM server');
is($t->redis('EXISTS', st_key($st)), 0, 'the security token is used up');
my @pairing = pairing_keys();
is(scalar @pairing, 1, 'one pairing token is recorded in Redis');
my $ttl = @pairing ? $t->redis_ttl($pairing[0]) : -2;
ok($ttl > 590 && $ttl <= 600,
    'the pairing token expires after mdm_watch_token_ttl (10m)')
    or diag("TTL $ttl");

$res = $t->get_token_response(udid => $phone, security_token => $st,
    watch_udid => $watch);
is($res->{status}, 403, 'a security token cannot be used twice');
is(scalar(() = pairing_keys()), 1, 'the second GetToken made no token');

# malformed GetToken requests

sub malformed {
    my ($what, $body) = @_;
    $t->flush_redis;
    my $st = security_token();
    my $before = $t->upstream_count;

    $body = $body->($st) if ref $body eq 'CODE';
    my @keys = $t->redis_keys('mdm_watch:*');
    my $res = $t->checkin($body);
    is($res->{status}, 400, "$what is answered 400")
        or diag(MdmWatch::Test::describe($res));
    is($t->upstream_count, $before, "$what: nothing reached the MDM server");
    is_deeply([$t->redis_keys('mdm_watch:*')], \@keys,
        "$what: Redis is as it was");
    ok(grep({ $_ eq st_key($st) } @keys),
        "$what: the security token is still there");
}

sub get_token_with {
    my (%params) = @_;
    return sub {
        my ($st) = @_;
        my %p = (SecurityToken => $st, PhoneUDID => $phone,
            WatchUDID => $watch, %params);
        delete @p{ grep { !defined $p{$_} } keys %p };
        return checkin(MessageType => 'GetToken', UDID => $phone,
            TokenServiceType => 'com.apple.watch.pairing',
            TokenParameters => \%p);
    };
}

malformed('a GetToken without TokenParameters',
    checkin(MessageType => 'GetToken', UDID => $phone,
        TokenServiceType => 'com.apple.watch.pairing'));
malformed('a GetToken whose TokenParameters is a string',
    checkin(MessageType => 'GetToken', UDID => $phone,
        TokenServiceType => 'com.apple.watch.pairing',
        TokenParameters => 'SecurityToken'));
malformed('a GetToken without SecurityToken',
    get_token_with(SecurityToken => undef));
malformed('a GetToken without PhoneUDID', get_token_with(PhoneUDID => undef));
malformed('a GetToken without WatchUDID', get_token_with(WatchUDID => undef));
malformed('a GetToken whose SecurityToken is data',
    sub { get_token_with(SecurityToken => \$_[0])->($_[0]) });
malformed('a GetToken whose PhoneUDID is an integer',
    get_token_with(PhoneUDID => \\8110));
malformed('a GetToken whose WatchUDID is an array',
    get_token_with(WatchUDID => [$watch]));

# GetToken requests that do not fit the security token

sub refused {
    my ($what, $kept, %o) = @_;
    $t->flush_redis;
    my $st = security_token();
    my $before = $t->upstream_count;

    my $res = $t->get_token_response(udid => $phone, security_token => $st,
        watch_udid => $watch, %o);
    is($res->{status}, 403, "$what is answered 403")
        or diag(MdmWatch::Test::describe($res));
    is(parse_token_data($res->{body}), undef, "$what: no TokenData");
    is($t->upstream_count, $before, "$what: nothing reached the MDM server");
    is_deeply([pairing_keys()], [], "$what: no pairing token is made");
    is($t->redis('GET', st_key($st)), $kept ? $watch : undef,
        $kept ? "$what: the security token is still there"
              : "$what: the security token is gone");
}

refused('a security token that was never issued', 1,
    security_token => MdmWatch::Test::random_uuid());
refused('a security token of "*"', 1, security_token => '*');
refused('a security token that is a Redis key', 1,
    security_token => 'mdm_watch:security_token:*');
refused('a security token for another watch', 1, watch_udid => $other_watch);
refused('a PhoneUDID that is not the UDID of the message', 1,
    phone_udid => '00008110-0000000000000001');

$t->flush_redis;
$st = security_token();
$t->redis('DEL', st_key($st));
$res = $t->get_token_response(udid => $phone, security_token => $st,
    watch_udid => $watch);
is($res->{status}, 403, 'a security token Redis no longer has is refused');

# UDIDs in any letter case

sub case_ok {
    my ($what, $challenged, %o) = @_;
    $t->flush_redis;
    my $st = security_token($challenged);
    my $res = $t->get_token_response(udid => $phone, security_token => $st,
        watch_udid => $watch, %o);
    is($res->{status}, 200, $what) or diag(MdmWatch::Test::describe($res));
    ok(length(parse_token_data($res->{body}) // ''), "$what: TokenData");
}

case_ok('a lower-case WatchUDID fits a challenge of the upper-case UDID',
    $watch, watch_udid => lc $watch);
case_ok('an upper-case WatchUDID fits a challenge of a lower-case UDID',
    lc $watch, watch_udid => uc $watch);
case_ok('a PhoneUDID in lower case fits an upper-case message UDID',
    $watch, phone_udid => lc $phone);
case_ok('a message UDID in lower case fits an upper-case PhoneUDID',
    $watch, udid => lc $phone, phone_udid => $phone);

$t->finish;
